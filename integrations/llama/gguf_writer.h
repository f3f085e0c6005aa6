// Writes GGUF v3 files (the layout gguf_file.h describes) that GgufFile and llama.cpp read: for
// tests (tiny models, and hostile files made by editing the bytes) and for tools that make models
// (bench/make_model).
//
// Layout written: header, key/values in the order they were added (general.alignment first when
// the alignment is not the default 32), tensor infos in the order added, zero padding to the
// alignment, then each tensor's data followed by zero padding to the alignment, as gguf-py and
// ggml's gguf_write do. Tensor offsets are therefore consecutive and aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "llama/ggml_type.h"
#include "llama/gguf_file.h"

namespace kvcache::llama {

/// Builds a GGUF file in memory. Every add_* copies its arguments; the writer holds a copy of all
/// tensor data until it is destroyed (except add_tensor_generated's, made while writing). Not
/// thread safe.
///
/// Errors: InvalidArgument for a duplicate key or tensor name, an empty name, a tensor name of 64
/// bytes or more (llama.cpp's limit), an alignment that
/// is not a nonzero power of two, or tensor dims/data that do not match (n_dims not in 1..4, a dim
/// of 0, dims[0] not a multiple of the type's block size, data not exactly the type's byte size).
/// A failed add_* leaves the writer unchanged. write() throws kvcache::Error when the file cannot
/// be written, and then leaves no file (and no temporary) behind.
class GgufWriter {
 public:
  /// `alignment`: of the data section and of each tensor's offset; a value other than 32 is
  /// recorded as the u32 key general.alignment.
  explicit GgufWriter(std::uint32_t alignment = 32);

  void add_u8(std::string_view key, std::uint8_t v);
  void add_i8(std::string_view key, std::int8_t v);
  void add_u16(std::string_view key, std::uint16_t v);
  void add_i16(std::string_view key, std::int16_t v);
  void add_u32(std::string_view key, std::uint32_t v);
  void add_i32(std::string_view key, std::int32_t v);
  void add_u64(std::string_view key, std::uint64_t v);
  void add_i64(std::string_view key, std::int64_t v);
  void add_f32(std::string_view key, float v);
  void add_f64(std::string_view key, double v);
  void add_bool(std::string_view key, bool v);
  void add_string(std::string_view key, std::string_view v);
  void add_string_array(std::string_view key, std::span<const std::string> v);
  void add_string_array(std::string_view key, std::span<const std::string_view> v);
  void add_f32_array(std::string_view key, std::span<const float> v);
  void add_i32_array(std::string_view key, std::span<const std::int32_t> v);
  void add_u32_array(std::string_view key, std::span<const std::uint32_t> v);

  /// A tensor of `type` with `dims` (ne order: dims[0] is the contiguous one) whose bytes are
  /// `data` (exactly n_elements / block elems * block bytes, in ggml's block layout).
  void add_tensor(std::string_view name, GgmlType type, std::span<const std::uint64_t> dims,
                  std::span<const std::byte> data);
  /// A tensor whose bytes are produced only while the file is written: `generate` is called once
  /// per emission (write() or bytes()) with a buffer of exactly the tensor's byte size to fill.
  /// The writer then holds one tensor's bytes at a time, not the model, so tools can stream
  /// models larger than memory (bench/make_model). Same checks as add_tensor.
  using TensorGenerator = std::function<void(std::span<std::byte> out)>;
  void add_tensor_generated(std::string_view name, GgmlType type, std::span<const std::uint64_t> dims,
                            TensorGenerator generate);
  /// add_tensor for f32 values.
  void add_tensor_f32(std::string_view name, std::span<const std::uint64_t> dims,
                      std::span<const float> values);

  /// The whole file.
  std::vector<std::byte> bytes() const;
  /// Writes the file to `path` atomically: a temporary file beside it, fsync, rename over `path`
  /// (so a reader that has the old file mapped keeps a valid mapping: see mapped_file.h).
  void write(const std::filesystem::path& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<std::uint64_t> dims;
    std::vector<std::byte> data;
    std::uint64_t size = 0;    ///< bytes of data (data.size(), or the generated size)
    TensorGenerator generate;  ///< set for add_tensor_generated, which leaves data empty
  };
  /// Checks name, dims and size for add_tensor*; returns the tensor's byte size.
  std::uint64_t check_tensor(std::string_view name, GgmlType type, std::span<const std::uint64_t> dims) const;
  /// Starts a key/value: checks the key and appends key and type to `kv_bytes_`.
  void begin(std::string_view key, GgufValueType type);
  template <class T>
  void add_scalar(std::string_view key, GgufValueType type, T v);
  template <class T>
  void add_array(std::string_view key, GgufValueType elem, std::span<const T> v);
  template <class Sink>
  void emit(Sink&& sink) const;

  std::uint32_t alignment_;
  std::uint64_t n_kv_ = 0;
  std::vector<std::byte> kv_bytes_;  ///< the encoded key/values, in order
  std::unordered_set<std::string> keys_;
  std::vector<Tensor> tensors_;
  std::unordered_set<std::string> tensor_names_;
};

}  // namespace kvcache::llama
