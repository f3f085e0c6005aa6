// Internal: the row kernels behind weight_matmul (weight_matmul.h). One scalar twin
// (weight_matmul_scalar.cc) and one Highway version (weight_matmul_hwy.cc) with equal contracts.
#pragma once

#include <cstddef>
#include <cstdint>

#include "llama/ggml_type.h"

namespace kvcache::llama::kernels {

/// One product's operands. For the float weight types the kernels read `x`; for the quantized
/// ones `xq`, `xd` and `xs` (the Q8 activations of quantize_activations), never `x`.
struct MatmulArgs {
  WeightMatrix w;
  std::uint32_t n = 0;               ///< activation rows
  const float* x = nullptr;          ///< n x w.cols f32
  const std::int8_t* xq = nullptr;   ///< n x w.cols int8
  const float* xd = nullptr;         ///< n x (w.cols / 32) block scales
  const std::int32_t* xs = nullptr;  ///< n x (w.cols / 32) sums of each block's int8 values
  float* y = nullptr;                ///< n x w.rows outputs
};

/// Writes y[t * rows + r] for r in [r0, r1) and every t < n. Distinct row ranges may run
/// concurrently (they write disjoint outputs).
void matmul_rows_scalar(const MatmulArgs& a, std::uint32_t r0, std::uint32_t r1);
/// The same with Highway SIMD, dispatched at run time to the best target the CPU supports.
void matmul_rows_hwy(const MatmulArgs& a, std::uint32_t r0, std::uint32_t r1);

}  // namespace kvcache::llama::kernels
