// GGUF (llama.cpp's model format, versions 2 and 3): a read-only, fully validated view of a
// memory-mapped file: metadata key/values, tensor infos, and tensor data in place.
//
// File layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
// key/value pairs (gguf string key, u32 value type, value), then n_tensors tensor infos (string
// name, u32 n_dims, n_dims u64 dims with ne[0] the contiguous one, u32 ggml type, u64 offset
// relative to the data section), padding to general.alignment (default 32), then the data section.
// Versions 2 and 3 share this layout (3 only allowed big-endian files, which are rejected here).
//
// What open() validates before anything is used (each failure a FormatError, see GgufFile):
//  - magic, version (2 or 3; 1 and anything newer are refused by name), little-endian;
//  - tensor and key/value counts against the bytes left (a key/value needs at least 13 bytes, a
//    tensor info 32), every string and array length against the bytes left, without overflow;
//  - value types (0..12); arrays of arrays are refused (ggml's gguf.cpp refuses them too);
//    booleans are 0 or 1; duplicate keys;
//  - general.alignment: type u32, a nonzero power of two;
//  - tensor infos: name unique, n_dims 1..4, every dim > 0, the element count without overflow,
//    the type one the runtime supports (ggml_type_from_raw; a known ggml type it does not support
//    is named in the message), dims[0] a multiple of the type's block size, the offset a multiple
//    of the alignment, the data [offset, offset + bytes) inside the file, aligned in memory for
//    its type (4 bytes for f32, 2 for the others), and no two tensors' data overlapping.
// Strings are raw bytes: GGUF says UTF-8 but the reader does not check it (consumers that need
// text, like tokenizers, check what they use).
// Compared with ggml's gguf.cpp (Feb 2025): the same rules for magic, versions, value types (it
// also refuses arrays of arrays), duplicates, alignment, n_dims <= 4, the int64 element count and
// the block size. Stricter: n_dims >= 1 and dims > 0 (ggml allows 0), booleans 0/1, data inside
// the file checked up front. Looser: tensor offsets need only be aligned and disjoint (ggml wants
// them consecutive in file order, which every writer does), and names may be 64 bytes or longer
// (ggml's GGML_MAX_NAME limit), so a file this reader accepts is not always one llama.cpp loads.
//
// The file is memory-mapped (MappedFile): tensor data is never copied. Caveat: if another process
// truncates the file while it is open, reading a tensor's pages raises SIGBUS (as in llama.cpp);
// replace model files by rename, never by rewriting them in place.
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
#include "llama/mapped_file.h"

namespace kvcache::llama {

/// GGUF metadata value types (gguf_type numbers).
enum class GgufValueType : std::uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

/// "u8", "i8", ..., "bool", "string", "array", "u64", "i64", "f64"; "?" for other values.
std::string_view gguf_value_type_name(GgufValueType type);

/// Element type and length of an array value.
struct GgufArrayInfo {
  GgufValueType type = GgufValueType::u8;  ///< element type (never array)
  std::uint64_t size = 0;                  ///< number of elements
};

/// One tensor: name, shape (dims[0] contiguous, as ggml's ne), type, and its bytes in the file.
struct GgufTensor {
  std::string name;
  std::vector<std::uint64_t> dims;  ///< 1..4 dims, ne[0] first
  GgmlType type = GgmlType::f32;
  std::uint64_t offset = 0;  ///< from the start of the data section (aligned)
  /// Exactly the tensor's bytes (n_elements / block elems * block bytes), validated to lie inside
  /// the file and to be aligned for its type (4 bytes for f32, 2 for the others).
  std::span<const std::byte> data;

  /// Product of the dims (validated not to overflow).
  std::uint64_t n_elements() const;
  /// The tensor as a [rows][cols] matrix, cols = dims[0], rows = product of the other dims.
  /// Throws FormatError naming the tensor when rows or cols do not fit 32 bits.
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
  /// `residence`: the file's pages mapped in place (default) or a private copy in huge-page
  /// memory (MappedFile, FileResidence).
  static std::shared_ptr<const GgufFile> open(const std::filesystem::path& path,
                                              FileResidence residence = FileResidence::mapped);

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
  std::optional<std::vector<std::uint32_t>> get_u32_array(std::string_view key) const;
  /// Element type and length of the array `key`; nullopt when absent, FormatError when not an array.
  std::optional<GgufArrayInfo> array_info(std::string_view key) const;
  /// get_uint, and FormatError naming the key when the value does not fit 32 bits.
  std::optional<std::uint32_t> get_u32(std::string_view key) const;
  /// As get_string / get_uint, and FormatError "<file>: key '<key>' is missing" when absent.
  std::string require_string(std::string_view key) const;
  std::uint64_t require_uint(std::string_view key) const;
  /// The value of `key` in a short human-readable form (strings quoted and cut at 64 bytes,
  /// arrays as `[512 x string: "<unk>", "<s>", ...]` with at most `max_elems` elements shown);
  /// nullopt when absent. For `kvstream inspect` and diagnostics.
  std::optional<std::string> describe(std::string_view key, std::size_t max_elems = 4) const;
  /// Every key in file order (for `kvstream inspect` and diagnostics).
  std::vector<std::string_view> keys() const;

  std::span<const GgufTensor> tensors() const noexcept;
  /// The tensor named `name`, or null.
  const GgufTensor* find_tensor(std::string_view name) const;
  /// The tensor named `name`, which must have exactly `dims` (ne order, dims[0] contiguous).
  /// Throws FormatError "<file>: tensor '<name>' is missing" or "<file>: tensor '<name>': dims
  /// [64, 32], expected [64, 64]". For loaders checking tensors against hyper-parameters.
  const GgufTensor& require_tensor(std::string_view name, std::span<const std::uint64_t> dims) const;

  /// File offset of the data section (the end of the tensor infos rounded up to alignment()).
  std::uint64_t data_offset() const noexcept;
  /// Size of the file in bytes when it was opened.
  std::uint64_t file_size() const noexcept;
  /// "GGUF file '<path>'": the prefix of every message about this file.
  const std::string& label() const noexcept;
  /// Throws FormatError "<label>: <message>". For code that validates what it reads from the file
  /// (e.g. fail("key 'llama.block_count': 0 layers")), so every message names the file the same way.
  [[noreturn]] void fail(std::string_view message) const;

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  explicit GgufFile(std::unique_ptr<Impl> impl);
};

}  // namespace kvcache::llama
