// Scalar twin of the attention kernel: plain loops and a two-pass softmax, the oracle that the
// Highway kernel is tested against. Clarity over speed.
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kvcache/attention/kernel.h"

namespace kvcache::kernels {
namespace {

float load_elem(DType dtype, const std::byte* row, std::uint32_t i) {
  if (dtype == DType::f32) {
    float x;
    std::memcpy(&x, row + std::size_t{i} * 4, 4);
    return x;
  }
  std::uint16_t h;
  std::memcpy(&h, row + std::size_t{i} * 2, 2);
  return f32_from_f16(h);
}

}  // namespace

void attend_group_scalar(DType dtype, std::uint32_t head_dim, std::uint32_t n_group, float scale,
                         std::span<const HeadBlock> blocks, float* out, float* mass,
                         std::size_t mass_stride) {
  assert(head_dim > 0 && n_group > 0);
  const std::size_t row_bytes = std::size_t{head_dim} * dtype_bytes(dtype);
  std::size_t total = 0;
  for (const HeadBlock& b : blocks) total += b.n;
  assert(total > 0);

  std::vector<double> logits(total);
  for (std::uint32_t g = 0; g < n_group; ++g) {
    // Pass 1: logits and their maximum.
    double max_logit = -std::numeric_limits<double>::infinity();
    std::size_t j = 0;
    for (const HeadBlock& b : blocks) {
      const float* q = b.q + std::size_t{g} * head_dim;
      for (std::uint32_t r = 0; r < b.n; ++r, ++j) {
        const std::byte* krow = b.k + r * row_bytes;
        double dot = 0;
        for (std::uint32_t i = 0; i < head_dim; ++i) dot += double{q[i]} * load_elem(dtype, krow, i);
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
        const std::byte* vrow = b.v + r * row_bytes;
        for (std::uint32_t i = 0; i < head_dim; ++i) acc[i] += p * load_elem(dtype, vrow, i);
      }
    }
    for (std::uint32_t i = 0; i < head_dim; ++i)
      out[std::size_t{g} * head_dim + i] = static_cast<float>(acc[i]);
  }
}

}  // namespace kvcache::kernels
