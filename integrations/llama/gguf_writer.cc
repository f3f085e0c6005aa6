#include "llama/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <random>

#include "kvcache/error.h"

namespace kvcache::llama {
namespace {

constexpr std::uint32_t kVersion = 3;
constexpr std::uint32_t kDefaultAlignment = 32;

template <class T>
void put(std::vector<std::byte>& out, T v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

void put_string(std::vector<std::byte>& out, std::string_view s) {
  put(out, std::uint64_t{s.size()});
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

std::uint64_t padding(std::uint64_t size, std::uint64_t alignment) {
  return (alignment - size % alignment) % alignment;
}

/// Tensor data bytes for `type` and `dims`, or 0 when they are invalid (message in *why).
std::uint64_t tensor_bytes(GgmlType type, std::span<const std::uint64_t> dims, std::string* why) {
  if (dims.empty() || dims.size() > 4) {
    *why = "n_dims " + std::to_string(dims.size()) + " is not in 1..4";
    return 0;
  }
  std::uint64_t rows = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 0) {
      *why = "dims[" + std::to_string(i) + "] is 0";
      return 0;
    }
    if (i > 0 && __builtin_mul_overflow(rows, dims[i], &rows)) {
      *why = "the element count overflows";
      return 0;
    }
  }
  const std::optional<std::size_t> row = ggml_row_bytes(type, dims[0]);
  if (!row) {
    *why = "dims[0] = " + std::to_string(dims[0]) + " is not a multiple of " +
           std::string(ggml_type_name(type)) + "'s block size " + std::to_string(ggml_block_elems(type));
    return 0;
  }
  std::uint64_t total = 0;
  if (__builtin_mul_overflow(rows, std::uint64_t{*row}, &total)) {
    *why = "the byte size overflows";
    return 0;
  }
  return total;
}

}  // namespace

GgufWriter::GgufWriter(std::uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment)) {
    throw InvalidArgument("GgufWriter: alignment " + std::to_string(alignment) +
                          " is not a nonzero power of two");
  }
  if (alignment != kDefaultAlignment) add_u32("general.alignment", alignment);
}

void GgufWriter::begin(std::string_view key, GgufValueType type) {
  if (key.empty()) throw InvalidArgument("GgufWriter: empty key");
  if (!keys_.emplace(key).second)
    throw InvalidArgument("GgufWriter: duplicate key '" + std::string(key) + "'");
  put_string(kv_bytes_, key);
  put(kv_bytes_, static_cast<std::uint32_t>(type));
  ++n_kv_;
}

template <class T>
void GgufWriter::add_scalar(std::string_view key, GgufValueType type, T v) {
  begin(key, type);
  put(kv_bytes_, v);
}

template <class T>
void GgufWriter::add_array(std::string_view key, GgufValueType elem, std::span<const T> v) {
  begin(key, GgufValueType::array);
  put(kv_bytes_, static_cast<std::uint32_t>(elem));
  put(kv_bytes_, std::uint64_t{v.size()});
  for (const T& x : v) {
    if constexpr (std::is_convertible_v<T, std::string_view>) {
      put_string(kv_bytes_, x);
    } else {
      put(kv_bytes_, x);
    }
  }
}

void GgufWriter::add_u8(std::string_view key, std::uint8_t v) { add_scalar(key, GgufValueType::u8, v); }
void GgufWriter::add_i8(std::string_view key, std::int8_t v) { add_scalar(key, GgufValueType::i8, v); }
void GgufWriter::add_u16(std::string_view key, std::uint16_t v) { add_scalar(key, GgufValueType::u16, v); }
void GgufWriter::add_i16(std::string_view key, std::int16_t v) { add_scalar(key, GgufValueType::i16, v); }
void GgufWriter::add_u32(std::string_view key, std::uint32_t v) { add_scalar(key, GgufValueType::u32, v); }
void GgufWriter::add_i32(std::string_view key, std::int32_t v) { add_scalar(key, GgufValueType::i32, v); }
void GgufWriter::add_u64(std::string_view key, std::uint64_t v) { add_scalar(key, GgufValueType::u64, v); }
void GgufWriter::add_i64(std::string_view key, std::int64_t v) { add_scalar(key, GgufValueType::i64, v); }
void GgufWriter::add_f32(std::string_view key, float v) { add_scalar(key, GgufValueType::f32, v); }
void GgufWriter::add_f64(std::string_view key, double v) { add_scalar(key, GgufValueType::f64, v); }
void GgufWriter::add_bool(std::string_view key, bool v) {
  add_scalar(key, GgufValueType::boolean, std::uint8_t{v ? std::uint8_t{1} : std::uint8_t{0}});
}

void GgufWriter::add_string(std::string_view key, std::string_view v) {
  begin(key, GgufValueType::string);
  put_string(kv_bytes_, v);
}

void GgufWriter::add_string_array(std::string_view key, std::span<const std::string> v) {
  add_array(key, GgufValueType::string, v);
}
void GgufWriter::add_string_array(std::string_view key, std::span<const std::string_view> v) {
  add_array(key, GgufValueType::string, v);
}
void GgufWriter::add_f32_array(std::string_view key, std::span<const float> v) {
  add_array(key, GgufValueType::f32, v);
}
void GgufWriter::add_i32_array(std::string_view key, std::span<const std::int32_t> v) {
  add_array(key, GgufValueType::i32, v);
}
void GgufWriter::add_u32_array(std::string_view key, std::span<const std::uint32_t> v) {
  add_array(key, GgufValueType::u32, v);
}

std::uint64_t GgufWriter::check_tensor(std::string_view name, GgmlType type,
                                       std::span<const std::uint64_t> dims) const {
  const std::string label = "GgufWriter: tensor '" + std::string(name) + "': ";
  if (name.empty()) throw InvalidArgument("GgufWriter: empty tensor name");
  // ggml keeps names in char[GGML_MAX_NAME = 64] and refuses files with longer ones.
  if (name.size() >= 64) throw InvalidArgument(label + "name of 64 bytes or more (llama.cpp refuses it)");
  if (tensor_names_.contains(std::string(name))) throw InvalidArgument(label + "duplicate tensor name");
  std::string why;
  const std::uint64_t expected = tensor_bytes(type, dims, &why);
  if (expected == 0) throw InvalidArgument(label + why);
  return expected;
}

void GgufWriter::add_tensor(std::string_view name, GgmlType type, std::span<const std::uint64_t> dims,
                            std::span<const std::byte> data) {
  const std::uint64_t expected = check_tensor(name, type, dims);
  if (data.size() != expected) {
    throw InvalidArgument("GgufWriter: tensor '" + std::string(name) + "': " + std::to_string(data.size()) +
                          " bytes of data, but a " + std::string(ggml_type_name(type)) +
                          " tensor of these dims has " + std::to_string(expected));
  }
  tensors_.push_back(
      Tensor{std::string(name), type, {dims.begin(), dims.end()}, {data.begin(), data.end()}, expected, {}});
  tensor_names_.emplace(name);
}

void GgufWriter::add_tensor_generated(std::string_view name, GgmlType type,
                                      std::span<const std::uint64_t> dims, TensorGenerator generate) {
  const std::uint64_t size = check_tensor(name, type, dims);
  if (!generate) throw InvalidArgument("GgufWriter: tensor '" + std::string(name) + "': no generator");
  tensors_.push_back(
      Tensor{std::string(name), type, {dims.begin(), dims.end()}, {}, size, std::move(generate)});
  tensor_names_.emplace(name);
}

void GgufWriter::add_tensor_f32(std::string_view name, std::span<const std::uint64_t> dims,
                                std::span<const float> values) {
  add_tensor(name, GgmlType::f32, dims, std::as_bytes(values));
}

template <class Sink>
void GgufWriter::emit(Sink&& sink) const {
  std::vector<std::byte> head;
  head.insert(head.end(), {std::byte{'G'}, std::byte{'G'}, std::byte{'U'}, std::byte{'F'}});
  put(head, kVersion);
  put(head, std::uint64_t{tensors_.size()});
  put(head, n_kv_);
  head.insert(head.end(), kv_bytes_.begin(), kv_bytes_.end());
  std::uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put(head, static_cast<std::uint32_t>(t.dims.size()));
    for (std::uint64_t d : t.dims) put(head, d);
    put(head, static_cast<std::uint32_t>(t.type));
    put(head, offset);
    offset += t.size + padding(t.size, alignment_);
  }
  head.resize(head.size() + padding(head.size(), alignment_));
  sink(std::span<const std::byte>(head));
  const std::vector<std::byte> zeros(alignment_);
  std::vector<std::byte> generated;  // one generated tensor at a time
  for (const Tensor& t : tensors_) {
    if (t.generate) {
      generated.assign(t.size, std::byte{0});
      t.generate(generated);
      sink(std::span<const std::byte>(generated));
    } else {
      sink(std::span<const std::byte>(t.data));
    }
    sink(std::span<const std::byte>(zeros).first(padding(t.size, alignment_)));
  }
}

std::vector<std::byte> GgufWriter::bytes() const {
  std::vector<std::byte> out;
  emit([&](std::span<const std::byte> b) { out.insert(out.end(), b.begin(), b.end()); });
  return out;
}

void GgufWriter::write(const std::filesystem::path& path) const {
  // Temporary file beside the target, so the rename is atomic on the same file system.
  const std::string name = path.string();
  const std::string tmp = name + ".tmp." + std::to_string(std::random_device{}());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("GgufWriter: " + name + ": cannot create " + tmp + ": " + std::strerror(errno));
  try {
    emit([&](std::span<const std::byte> b) {
      while (!b.empty()) {
        const ::ssize_t n = ::write(fd, b.data(), b.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw Error("GgufWriter: " + name + ": write failed: " + std::strerror(errno));
        b = b.subspan(static_cast<std::size_t>(n));
      }
    });
    if (::fsync(fd) != 0) throw Error("GgufWriter: " + name + ": fsync failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), name.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("GgufWriter: " + name + ": rename failed: " + std::strerror(err));
  }
}

}  // namespace kvcache::llama
