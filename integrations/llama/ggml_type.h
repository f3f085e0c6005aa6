// ggml tensor element types as GGUF files store them, and a view of a weight matrix kept in place
// (in a memory-mapped file or any other buffer the caller owns) in its own type.
//
// Block definitions follow ggml (ggml-common.h): a row of a quantized matrix is a sequence of
// blocks of block_elems() elements stored in block_bytes() bytes; rows never share a block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace kvcache::llama {

/// The tensor types the runtime reads. Values are ggml's `enum ggml_type` numbers as stored in
/// GGUF tensor infos; anything else is unsupported (FormatError at load time).
enum class GgmlType : std::uint32_t {
  f32 = 0,    ///< IEEE binary32
  f16 = 1,    ///< IEEE binary16
  q4_0 = 2,   ///< blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = d * (q - 8)
  q8_0 = 8,   ///< blocks of 32: f16 scale d, 32 int8 q; x = d * q
  q4_k = 12,  ///< super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit q
  q6_k = 14,  ///< super-blocks of 256: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, f16 d
  bf16 = 30,  ///< bfloat16 (upper half of an f32)
};

/// The type whose ggml number is `raw`, or nullopt when the runtime does not support it.
std::optional<GgmlType> ggml_type_from_raw(std::uint32_t raw);
/// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K" (ggml's spelling).
std::string_view ggml_type_name(GgmlType type);
/// Elements per block (1 for f32/f16/bf16, 32 for q8_0/q4_0, 256 for q4_K/q6_K).
std::uint32_t ggml_block_elems(GgmlType type);
/// Bytes per block (4, 2, 2, 34, 18, 144, 210).
std::uint32_t ggml_block_bytes(GgmlType type);
/// Bytes of a row of `n` elements, or nullopt when `n` is not a multiple of the block size.
std::optional<std::size_t> ggml_row_bytes(GgmlType type, std::uint64_t n);

/// A row-major [rows][cols] matrix in type `type`, not owned: `data` points to rows * row_bytes
/// bytes that outlive the view (the mmapped GGUF file, or a Checkpoint's buffer).
/// cols is a multiple of the type's block size. Value type, cheap to copy.
struct WeightMatrix {
  GgmlType type = GgmlType::f32;
  std::uint32_t rows = 0;
  std::uint32_t cols = 0;
  const std::byte* data = nullptr;
  std::size_t row_bytes = 0;  ///< bytes between consecutive rows (== ggml_row_bytes(type, cols))

  const std::byte* row(std::uint32_t r) const { return data + std::size_t{r} * row_bytes; }
  std::size_t bytes() const { return std::size_t{rows} * row_bytes; }
};

}  // namespace kvcache::llama
