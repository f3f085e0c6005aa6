// GGUF (llama.cpp's model format, versions 2 and 3): a read-only, fully validated view of a
// memory-mapped file: metadata key/values, tensor infos, and tensor data in place.
//
// File layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
// key/value pairs (gguf string key, u32 value type, value), then n_tensors tensor infos (string
// name, u32 n_dims, n_dims u64 dims with ne[0] the contiguous one, u32 ggml type, u64 offset
// relative to the data section), padding to general.alignment (default 32), then the data section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "llama/ggml_type.h"

namespace kvcache::llama {

/// GGUF metadata value types (gguf_type numbers).
enum class GgufValueType : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8,
  array = 9, u64 = 10, i64 = 11, f64 = 12,
};

/// One tensor: name, shape (dims[0] contiguous, as ggml's ne), type, and its bytes in the file.
struct GgufTensor {
  std::string name;
  std::vector<std::uint64_t> dims;  ///< 1..4 dims, ne[0] first
  GgmlType type = GgmlType::f32;
  std::uint64_t offset = 0;  ///< from the start of the data section (aligned)
  std::span<const std::byte> data;  ///< validated to lie inside the file

  std::uint64_t n_elements() const;
  /// The tensor as a [rows][cols] matrix, cols = dims[0], rows = product of the other dims.
  WeightMatrix matrix() const;
};

/// An opened, validated GGUF file. Immutable; thread safe to read from any number of threads.
/// Share it with shared_ptr<const GgufFile>: tensors' spans point into its mapping.
///
/// Errors: open() throws kvcache::FormatError whose message names the file and what is wrong
/// (bad magic, unsupported version, a count or length larger than the file could hold, an
/// unknown value or tensor type, a duplicate key or tensor name, a tensor whose offset or size
/// lies outside the file or is not aligned), and kvcache::Error when the file cannot be opened or
/// mapped. Nothing past the end of the file is ever read.
/// Typed getters throw FormatError naming the file and the key when the key is present with
/// another type (or, for the non-optional forms, missing).
class GgufFile {
 public:
  static std::shared_ptr<const GgufFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const noexcept;
  std::uint32_t version() const noexcept;
  std::uint32_t alignment() const noexcept;  ///< general.alignment, default 32

  bool has(std::string_view key) const;
  std::optional<GgufValueType> type_of(std::string_view key) const;
  /// Scalars. Integer getters accept any integer type whose value fits (a u32 key stored as
  /// i32 >= 0 is fine), and throw FormatError when it does not.
  std::optional<std::string_view> get_string(std::string_view key) const;
  std::optional<std::uint64_t> get_uint(std::string_view key) const;
  std::optional<std::int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;  ///< f32 or f64
  std::optional<bool> get_bool(std::string_view key) const;
  /// Arrays. Element type must match (string arrays as views into the mapping).
  std::optional<std::vector<std::string_view>> get_string_array(std::string_view key) const;
  std::optional<std::vector<float>> get_f32_array(std::string_view key) const;
  std::optional<std::vector<std::int32_t>> get_i32_array(std::string_view key) const;
  std::string require_string(std::string_view key) const;
  std::uint64_t require_uint(std::string_view key) const;
  /// Every key in file order (for `kvstream inspect` and diagnostics).
  std::vector<std::string_view> keys() const;

  std::span<const GgufTensor> tensors() const noexcept;
  /// The tensor named `name`, or null.
  const GgufTensor* find_tensor(std::string_view name) const;

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  explicit GgufFile(std::unique_ptr<Impl> impl);
};

}  // namespace kvcache::llama
