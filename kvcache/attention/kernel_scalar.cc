// Scalar twin of the attention kernel: plain loops and a two-pass softmax over rows dequantised
// with the format's own definition (kvcache/quant.h), the oracle that the Highway kernel is tested
// against. Clarity over speed.
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kvcache/attention/kernel.h"
#include "kvcache/quant.h"

namespace kvcache::kernels {
namespace {

std::uint16_t half_at(const std::byte* p, std::size_t i) {
  std::uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return h;
}

// Row r of a block's keys (is_key) or values, dequantised into `out` (head_dim floats).
void dequantize(const HeadBlock& b, bool is_key, std::uint32_t r, std::vector<float>& out) {
  const std::uint32_t head_dim = static_cast<std::uint32_t>(out.size());
  const std::size_t row_bytes = head_dim * dtype_bits(b.dtype) / 8;
  const std::byte* row = (is_key ? b.k : b.v) + r * row_bytes;
  const std::byte* params = is_key ? b.k_params : b.v_params;
  switch (b.dtype) {
    case DType::f32:
      std::memcpy(out.data(), row, row_bytes);
      return;
    case DType::f16:
      for (std::uint32_t i = 0; i < head_dim; ++i) out[i] = f32_from_f16(half_at(row, i));
      return;
    case DType::q8:
      quant::q8_dequantize(reinterpret_cast<const std::int8_t*>(row), half_at(params, r), out);
      return;
    case DType::q4: {
      const auto* packed = reinterpret_cast<const std::uint8_t*>(row);
      if (is_key) {
        std::vector<std::uint16_t> sz(2 * std::size_t{head_dim});
        std::memcpy(sz.data(), params, sz.size() * 2);
        quant::q4_dequantize_channels(packed, sz.data(), sz.data() + head_dim, out);
      } else {
        quant::q4_dequantize_row(
            packed, {half_at(params, 2 * std::size_t{r}), half_at(params, 2 * std::size_t{r} + 1)}, out);
      }
      return;
    }
  }
}

}  // namespace

std::size_t kv_row_bytes(DType dtype, std::uint32_t head_dim) {
  const std::size_t codes = 2 * (std::size_t{head_dim} * dtype_bits(dtype) / 8);
  return codes + (dtype == DType::q8 ? 4 : dtype == DType::q4 ? 4 : 0);
}

void attend_group_scalar(std::uint32_t head_dim, std::uint32_t n_group, float scale,
                         std::span<const HeadBlock> blocks, float* out, float* mass,
                         std::size_t mass_stride) {
  assert(head_dim > 0 && n_group > 0);
  std::size_t total = 0;
  for (const HeadBlock& b : blocks) total += b.n;
  assert(total > 0);

  std::vector<float> row(head_dim);
  std::vector<double> logits(total);
  for (std::uint32_t g = 0; g < n_group; ++g) {
    // Pass 1: logits and their maximum.
    double max_logit = -std::numeric_limits<double>::infinity();
    std::size_t j = 0;
    for (const HeadBlock& b : blocks) {
      const float* q = b.q + std::size_t{g} * head_dim;
      for (std::uint32_t r = 0; r < b.n; ++r, ++j) {
        dequantize(b, true, r, row);
        double dot = 0;
        for (std::uint32_t i = 0; i < head_dim; ++i) dot += double{q[i]} * row[i];
        logits[j] = dot * scale;
        max_logit = std::max(max_logit, logits[j]);
      }
    }
    // Pass 2: normalised probabilities and the weighted sum of values.
    double sum = 0;
    for (double& l : logits) {
      l = std::exp(l - max_logit);
      sum += l;
    }
    std::vector<double> acc(head_dim, 0.0);
    j = 0;
    for (const HeadBlock& b : blocks) {
      for (std::uint32_t r = 0; r < b.n; ++r, ++j) {
        const double p = logits[j] / sum;
        if (mass != nullptr) mass[g * mass_stride + j] = static_cast<float>(p);
        dequantize(b, false, r, row);
        for (std::uint32_t i = 0; i < head_dim; ++i) acc[i] += p * row[i];
      }
    }
    for (std::uint32_t i = 0; i < head_dim; ++i)
      out[std::size_t{g} * head_dim + i] = static_cast<float>(acc[i]);
  }
}

}  // namespace kvcache::kernels
