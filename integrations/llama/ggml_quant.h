// Conversions between f32 and the ggml tensor types of ggml_type.h, one row at a time.
//
// dequantize_row is exact by ggml's block definitions (ggml-common.h; layouts in ggml_blocks.h):
// every element is computed in f32 the way ggml's dequantize_row_* computes it, so a GGUF
// tensor dequantised here equals llama.cpp's reading of it.
//
// quantize_row is a reference quantiser used to make test and benchmark models: round to nearest
// with per-block scales; for q4_K and q6_K the sub-block scales (and q4_K's mins) are chosen by a
// small search that minimises the squared error, then re-rounded with the 6/8-bit scales actually
// stored. Quality over speed (a few hundred ns per block).
#pragma once

#include <cstddef>
#include <span>

#include "llama/ggml_type.h"

namespace kvcache::llama {

/// Writes out.size() elements decoded from the row that starts at `src` (ggml_row_bytes(type,
/// out.size()) bytes, any alignment). f16/bf16 infinities and NaNs stay what they are.
/// Throws InvalidArgument when out.size() is not a multiple of the type's block size.
void dequantize_row(GgmlType type, const std::byte* src, std::span<float> out);

/// Encodes `in` as one row of `type` into ggml_row_bytes(type, in.size()) bytes at `dst` (any
/// alignment). Inputs must be finite for the quantized types (a non-finite value makes its block's
/// scale non-finite). f16 rounds to nearest even (overflow to inf); bf16 rounds to nearest even
/// and keeps NaN a NaN. Throws InvalidArgument when in.size() is not a multiple of the block size.
void quantize_row(GgmlType type, std::span<const float> in, std::byte* dst);

}  // namespace kvcache::llama
