// weight_matmul: argument checks, activation quantisation, and the split of rows across threads.
#include "llama/weight_matmul.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "kvcache/error.h"
#include "llama/ggml_blocks.h"
#include "llama/weight_matmul_kernels.h"

namespace kvcache::llama {
namespace {

void check(const WeightMatrix& w, std::span<const float> x, std::uint32_t n, std::span<float> y) {
  const auto row_bytes = ggml_row_bytes(w.type, w.cols);
  if (!row_bytes || *row_bytes != w.row_bytes || w.rows == 0 || w.cols == 0 || w.data == nullptr)
    throw InvalidArgument("weight_matmul: a " + std::string(ggml_type_name(w.type)) + " matrix of " +
                          std::to_string(w.rows) + " x " + std::to_string(w.cols) + " with " +
                          std::to_string(w.row_bytes) + " bytes per row is not valid");
  if (n == 0 || x.size() < std::size_t{n} * w.cols || y.size() < std::size_t{n} * w.rows)
    throw InvalidArgument("weight_matmul: " + std::to_string(n) + " activation rows need " +
                          std::to_string(std::size_t{n} * w.cols) + " inputs and " +
                          std::to_string(std::size_t{n} * w.rows) + " outputs, got " +
                          std::to_string(x.size()) + " and " + std::to_string(y.size()));
}

// The operands of one product; the quantised activations, when its type reads them, must already
// be in `scratch`.
kernels::MatmulArgs args_for(const WeightMatrix& w, std::span<const float> x, std::uint32_t n,
                             std::span<float> y, MatmulScratch& scratch) {
  kernels::MatmulArgs a;
  a.w = w;
  a.n = n;
  a.y = y.data();
  if (quantizes_activations(w.type)) {
    a.xq = scratch.qs();
    a.xd = scratch.scales();
    a.xs = scratch.sums();
  } else {
    a.x = x.data();
  }
  return a;
}

kernels::MatmulArgs prepare(const WeightMatrix& w, std::span<const float> x, std::uint32_t n,
                            std::span<float> y, MatmulScratch& scratch) {
  check(w, x, n, y);
  if (quantizes_activations(w.type)) quantize_activations(x, n, w.cols, scratch);
  return args_for(w, x, n, y, scratch);
}

// Rows are handed to threads in groups of this many, so that no task cuts a kernel row group
// (8 rows on AVX512-VNNI, 4 elsewhere) in two.
constexpr std::uint32_t kRowsPerTask = 8;

// Splits `parts` (products of `per_row` multiply-adds per weight row) into tasks of whole row
// groups over one parallel_for. parts[i] covers groups [first[i], first[i + 1]).
void run_split(std::span<const kernels::MatmulArgs> parts, std::uint64_t per_row) {
  std::array<std::uint32_t, kMaxWeightProducts + 1> first{};
  for (std::size_t i = 0; i < parts.size(); ++i)
    first[i + 1] = first[i] + (parts[i].w.rows + kRowsPerTask - 1) / kRowsPerTask;
  // About 256K multiply-adds per task (a few tens of microseconds): cheap to steal, fine enough
  // to balance two to a few dozen threads.
  const std::uint64_t grain = std::max<std::uint64_t>(1, (std::uint64_t{1} << 18) / (per_row * kRowsPerTask));
  oneapi::tbb::parallel_for(
      oneapi::tbb::blocked_range<std::uint32_t>(0, first[parts.size()], static_cast<std::size_t>(grain)),
      [&](const oneapi::tbb::blocked_range<std::uint32_t>& range) {
        for (std::size_t i = 0; i < parts.size(); ++i) {
          const std::uint32_t g0 = std::max(range.begin(), first[i]),
                              g1 = std::min(range.end(), first[i + 1]);
          if (g0 >= g1) continue;
          const std::uint32_t r0 = (g0 - first[i]) * kRowsPerTask;
          const std::uint32_t r1 = std::min(parts[i].w.rows, (g1 - first[i]) * kRowsPerTask);
          kernels::matmul_rows_hwy(parts[i], r0, r1);
        }
      });
}

}  // namespace

void MatmulScratch::reserve(std::size_t n, std::size_t cols) {
  const std::size_t elems = n * cols, blocks = elems / blocks::kQK;
  if (qs_.size() < elems) qs_.resize(elems);
  if (scales_.size() < blocks) {
    scales_.resize(blocks);
    sums_.resize(blocks);
  }
}

bool quantizes_activations(GgmlType type) {
  return type == GgmlType::q8_0 || type == GgmlType::q4_0 || type == GgmlType::q4_k || type == GgmlType::q6_k;
}

void quantize_activations(std::span<const float> x, std::uint32_t n, std::uint32_t cols,
                          MatmulScratch& scratch) {
  constexpr std::size_t kQK = blocks::kQK;
  if (cols % kQK != 0 || x.size() < std::size_t{n} * cols)
    throw InvalidArgument("quantize_activations: " + std::to_string(n) + " rows of " + std::to_string(cols) +
                          " columns (a multiple of 32) from " + std::to_string(x.size()) + " values");
  scratch.reserve(n, cols);
  const std::size_t blocks = std::size_t{n} * cols / kQK;
  for (std::size_t b = 0; b < blocks; ++b) {
    const float* xb = x.data() + b * kQK;
    float amax = 0.f;
    bool finite = true;
    for (std::size_t j = 0; j < kQK; ++j) {
      amax = std::max(amax, std::fabs(xb[j]));
      finite = finite && std::isfinite(xb[j]);
    }
    // A NaN or infinity makes the block's scale NaN (and so every product it enters), rather than
    // an undefined float-to-int conversion.
    const float d = finite ? amax / 127.f : std::nanf("");
    const float id = finite && d != 0.f ? 1.f / d : 0.f;
    std::int32_t sum = 0;
    for (std::size_t j = 0; j < kQK; ++j) {
      // |xb[j] * id| <= 127 up to rounding, so the nearest integer is in [-127, 127].
      const auto q = static_cast<std::int8_t>(std::clamp(std::nearbyint(xb[j] * id), -127.f, 127.f));
      scratch.qs()[b * kQK + j] = q;
      sum += q;
    }
    scratch.scales()[b] = d;
    scratch.sums()[b] = sum;
  }
}

void weight_matmul(const WeightMatrix& w, std::span<const float> x, std::uint32_t n, std::span<float> y,
                   MatmulScratch& scratch) {
  const WeightProduct one[] = {{w, y}};
  weight_matmuls(one, x, n, scratch);
}

void weight_matmuls(std::span<const WeightProduct> products, std::span<const float> x, std::uint32_t n,
                    MatmulScratch& scratch) {
  if (products.empty() || products.size() > kMaxWeightProducts)
    throw InvalidArgument("weight_matmuls: " + std::to_string(products.size()) + " products (1 to " +
                          std::to_string(kMaxWeightProducts) + ")");
  const std::uint32_t cols = products[0].w.cols;
  bool quantized = false;
  std::uint64_t rows = 0;
  for (const WeightProduct& p : products) {
    check(p.w, x, n, p.y);
    if (p.w.cols != cols)
      throw InvalidArgument("weight_matmuls: matrices of " + std::to_string(cols) + " and " +
                            std::to_string(p.w.cols) + " columns cannot share activations");
    quantized = quantized || quantizes_activations(p.w.type);
    rows += p.w.rows;
  }
  if (quantized) quantize_activations(x, n, cols, scratch);
  std::array<kernels::MatmulArgs, kMaxWeightProducts> storage;
  const std::span<kernels::MatmulArgs> parts = std::span(storage).first(products.size());
  for (std::size_t i = 0; i < parts.size(); ++i)
    parts[i] = args_for(products[i].w, x, n, products[i].y, scratch);
  const std::uint64_t per_row = std::uint64_t{cols} * n;
  if (per_row * rows < kParallelWeightMacs) {
    for (const kernels::MatmulArgs& a : parts) kernels::matmul_rows_hwy(a, 0, a.w.rows);
    return;
  }
  run_split(parts, per_row);
}

void weight_matmul_scalar(const WeightMatrix& w, std::span<const float> x, std::uint32_t n,
                          std::span<float> y, MatmulScratch& scratch) {
  kernels::matmul_rows_scalar(prepare(w, x, n, y, scratch), 0, w.rows);
}

}  // namespace kvcache::llama
