// Products of activations with weight matrices kept in place in their ggml type (ggml_type.h):
// the decode (n = 1) and prefill (n > 1) matmuls of the forward pass.
//
// Arithmetic, per weight type:
//  - f32, f16, bf16: weights widened exactly to f32, f32 multiply-adds against f32 activations.
//  - q8_0, q4_0, q4_K, q6_K: as llama.cpp does, the activations are first quantised per block of 32
//    to int8 with an f32 scale (Q8 activations, see quantize_activations); each weight block's dot
//    product with an activation block is computed in integers (int16 products, int32 sums, exact),
//    then scaled by the product of the two blocks' scales in f32 and summed.
//    Compared with dequantising the weights and taking an f32 dot product, the result differs by
//    the activation rounding: at most sum_c |W[r][c]| * d_x(c) / 2, where d_x = max|x| / 127 over
//    the activation block of column c (so about 0.4% of sum_c |W[r][c] x[c]| for typical data).
// The Highway kernels (dynamic dispatch to the best SIMD target of the CPU) and the scalar twin
// weight_matmul_scalar do the same integer arithmetic per block and differ only in the order in
// which the f32 block terms are summed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "llama/ggml_type.h"

namespace kvcache::llama {

/// Activation scratch for the quantized types: n rows of cols int8 values, one f32 scale and one
/// int32 sum (of the block's int8 values) per block of 32. Owned by the caller and reused across
/// calls; it grows to the largest n * cols it has seen and never shrinks, so steady-state calls
/// allocate nothing. Not thread safe: one per thread that calls weight_matmul concurrently (the
/// kernels' own worker threads only read it).
class MatmulScratch {
 public:
  /// Makes room for n rows of cols values (cols a multiple of 32); allocates only to grow.
  void reserve(std::size_t n, std::size_t cols);

  std::int8_t* qs() { return qs_.data(); }
  float* scales() { return scales_.data(); }
  std::int32_t* sums() { return sums_.data(); }

 private:
  std::vector<std::int8_t> qs_;
  std::vector<float> scales_;
  std::vector<std::int32_t> sums_;
};

/// Quantises n rows of cols activations (cols a multiple of 32) into `scratch` (reserved here):
/// per block of 32, d = max|x| / 127, q = round(x / d) (0 for an all-zero block), and the sum of
/// the q. Deterministic and shared by both kernels, so they see identical integers.
void quantize_activations(std::span<const float> x, std::uint32_t n, std::uint32_t cols,
                          MatmulScratch& scratch);

/// True for the types whose products quantise the activations (q8_0, q4_0, q4_K, q6_K).
bool quantizes_activations(GgmlType type);

/// y[t * w.rows + r] = sum_c W[r][c] * x[t * w.cols + c] for r < w.rows, t < n: n activation rows
/// (a prefill batch, or 1 for decode) against the same weights; each weight row is read from
/// memory once per call whatever n is. Weights are read in place (`w.data`, any alignment).
/// Rows are split across threads with oneTBB parallel_for in the caller's current task arena
/// when rows * cols * n >= kParallelWeightMacs; smaller products run on the calling thread.
/// Sizes: x.size() >= n * w.cols, y.size() >= n * w.rows, n >= 1, w.cols a multiple of the
/// type's block size; otherwise InvalidArgument. x and y must not overlap.
/// Thread safety: concurrent calls need distinct scratches and outputs.
void weight_matmul(const WeightMatrix& w, std::span<const float> x, std::uint32_t n, std::span<float> y,
                   MatmulScratch& scratch);

/// One product of weight_matmuls: a weight matrix and where its n x w.rows results go.
struct WeightProduct {
  WeightMatrix w;
  std::span<float> y;
};

/// The most products one weight_matmuls call takes.
inline constexpr std::size_t kMaxWeightProducts = 4;

/// Several products of the same activations, as the q, k and v projections or the FFN's gate and
/// up are: each y equals what weight_matmul(w, x, n, y) writes, bit for bit, but the activations
/// are quantised once and the rows of all the matrices are split across threads in one
/// parallel_for, so a token step forks once where it would fork once per matrix (grouping q/k/v
/// and gate/up made TinyLlama Q4_0 decode on 2 threads about 6% faster, README.md, issue 10).
/// Every matrix must have the same cols; types may differ (as in
/// a Q4_K_M file, where v is Q6_K). 1 to kMaxWeightProducts products, sizes as weight_matmul's;
/// otherwise InvalidArgument, with nothing written. Thread safety as weight_matmul.
void weight_matmuls(std::span<const WeightProduct> products, std::span<const float> x, std::uint32_t n,
                    MatmulScratch& scratch);

/// The scalar twin of weight_matmul (same contract and per-block integer arithmetic, plain loops,
/// calling thread only). The oracle of the kernel tests.
void weight_matmul_scalar(const WeightMatrix& w, std::span<const float> x, std::uint32_t n,
                          std::span<float> y, MatmulScratch& scratch);

/// Below this many multiply-adds a product runs on the calling thread (README.md, "Threads", has the
/// measurement: fork/join costs a few microseconds, under 1% from 2M MACs).
inline constexpr std::uint64_t kParallelWeightMacs = std::uint64_t{1} << 21;

}  // namespace kvcache::llama
