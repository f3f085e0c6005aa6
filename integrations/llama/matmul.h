// Dense matrix products of the forward pass (f32 weights, row-major [out][in]).
#pragma once

#include <cstdint>
#include <span>

namespace kvcache::llama {

/// Below this many multiply-adds a product runs on the calling thread. Measured on the 2-core test
/// machine (README.md, "Threads"): a 64x64 product takes 0.18 us serial and 0.36 us through
/// parallel_for, 512x64 1.4 vs 2.5 us; even 2048x512 (1M MACs) gained nothing. At 2M MACs
/// (~0.2 ms) the fork/join cost is under 1%, so bigger models' products split; stories260K's never do.
inline constexpr std::uint64_t kParallelMatmulMacs = std::uint64_t{1} << 21;

/// y[t * rows + r] = sum_c w[r * cols + c] * x[t * cols + c] for r < rows, t < n: n input rows
/// (a prefill batch, or 1 for decode) against the same weights, so each weight row is read once
/// per batch. Highway SIMD with run-time target selection; summation order differs from a plain
/// loop (vector partial sums), so results agree with it to f32 rounding. Rows are split across oneTBB threads
/// when rows * cols * n >= kParallelMatmulMacs. Sizes are asserted: w.size() == rows * cols, x.size() >= n *
/// cols, y.size() >= n * rows. x and y must not overlap. Thread safe for distinct outputs.
void matmul(std::span<const float> w, std::uint32_t rows, std::uint32_t cols, std::span<const float> x,
            std::uint32_t n, std::span<float> y);

/// Dot product of a and b (equal sizes, asserted), SIMD like matmul.
float dot(std::span<const float> a, std::span<const float> b);

}  // namespace kvcache::llama
