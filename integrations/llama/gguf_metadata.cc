// GgufFile's metadata getters and describe(): decoding of values parse() already validated.
#include <algorithm>
#include <charconv>
#include <limits>

#include "llama/gguf_file.h"
#include "llama/gguf_file_impl.h"

namespace kvcache::llama {

using gguf_detail::is_integer;
using gguf_detail::Kv;
using gguf_detail::load;
using gguf_detail::quoted;
using gguf_detail::scalar_bytes;

std::pair<bool, std::uint64_t> GgufFile::Impl::integer(const Kv& kv, std::string_view expected) const {
  if (!is_integer(kv.type)) wrong_type(kv, expected);
  const std::byte* p = kv.value.data();
  switch (kv.type) {
    case GgufValueType::u8:
      return {false, load<std::uint8_t>(p)};
    case GgufValueType::u16:
      return {false, load<std::uint16_t>(p)};
    case GgufValueType::u32:
      return {false, load<std::uint32_t>(p)};
    case GgufValueType::u64:
      return {false, load<std::uint64_t>(p)};
    default:
      break;
  }
  std::int64_t v = 0;
  switch (kv.type) {
    case GgufValueType::i8:
      v = load<std::int8_t>(p);
      break;
    case GgufValueType::i16:
      v = load<std::int16_t>(p);
      break;
    case GgufValueType::i32:
      v = load<std::int32_t>(p);
      break;
    default:
      v = load<std::int64_t>(p);
      break;
  }
  return {v < 0, static_cast<std::uint64_t>(v)};
}

void GgufFile::fail(std::string_view message) const {
  throw FormatError(impl_->label + ": " + std::string(message));
}

bool GgufFile::has(std::string_view key) const { return impl_->find(key) != nullptr; }

std::optional<GgufValueType> GgufFile::type_of(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  return kv->type;
}

std::vector<std::string_view> GgufFile::keys() const {
  std::vector<std::string_view> out;
  out.reserve(impl_->kvs.size());
  for (const Kv& kv : impl_->kvs) out.push_back(kv.key);
  return out;
}

std::optional<std::string_view> GgufFile::get_string(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  if (kv->type != GgufValueType::string) impl_->wrong_type(*kv, "string");
  return std::string_view(reinterpret_cast<const char*>(kv->value.data()), kv->value.size());
}

std::optional<std::uint64_t> GgufFile::get_uint(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const auto [negative, v] = impl_->integer(*kv, "an unsigned integer");
  if (negative) {
    impl_->fail_key(key, "value " + std::to_string(static_cast<std::int64_t>(v)) + " is negative");
  }
  return v;
}

std::optional<std::uint32_t> GgufFile::get_u32(std::string_view key) const {
  const std::optional<std::uint64_t> v = get_uint(key);
  if (!v) return std::nullopt;
  if (*v > std::numeric_limits<std::uint32_t>::max()) {
    impl_->fail_key(key, "value " + std::to_string(*v) + " does not fit 32 bits");
  }
  return static_cast<std::uint32_t>(*v);
}

std::optional<std::int64_t> GgufFile::get_int(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const auto [negative, v] = impl_->integer(*kv, "an integer");
  if (!negative && v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    impl_->fail_key(key, "value " + std::to_string(v) + " does not fit a signed 64-bit integer");
  }
  return static_cast<std::int64_t>(v);
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  if (kv->type == GgufValueType::f32) return load<float>(kv->value.data());
  if (kv->type == GgufValueType::f64) return load<double>(kv->value.data());
  impl_->wrong_type(*kv, "f32 or f64");
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  if (kv->type != GgufValueType::boolean) impl_->wrong_type(*kv, "bool");
  return kv->value[0] != std::byte{0};
}

std::optional<GgufArrayInfo> GgufFile::array_info(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  if (kv->type != GgufValueType::array) impl_->wrong_type(*kv, "an array");
  return GgufArrayInfo{kv->elem_type, kv->count};
}

std::optional<std::vector<std::string_view>> GgufFile::get_string_array(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const std::span<const std::byte> b = impl_->array_of(*kv, GgufValueType::string, "array of string");
  std::vector<std::string_view> out;
  out.reserve(static_cast<std::size_t>(kv->count));
  // Validated by parse(): every length lies inside the array's bytes.
  std::size_t pos = 0;
  for (std::uint64_t i = 0; i < kv->count; ++i) {
    const auto n = static_cast<std::size_t>(load<std::uint64_t>(b.data() + pos));
    out.emplace_back(reinterpret_cast<const char*>(b.data() + pos + 8), n);
    pos += 8 + n;
  }
  return out;
}

std::optional<std::vector<float>> GgufFile::get_f32_array(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const std::span<const std::byte> b = impl_->array_of(*kv, GgufValueType::f32, "array of f32");
  std::vector<float> out(static_cast<std::size_t>(kv->count));
  if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

std::optional<std::vector<std::int32_t>> GgufFile::get_i32_array(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const std::span<const std::byte> b = impl_->array_of(*kv, GgufValueType::i32, "array of i32");
  std::vector<std::int32_t> out(static_cast<std::size_t>(kv->count));
  if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

std::optional<std::vector<std::uint32_t>> GgufFile::get_u32_array(std::string_view key) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const std::span<const std::byte> b = impl_->array_of(*kv, GgufValueType::u32, "array of u32");
  std::vector<std::uint32_t> out(static_cast<std::size_t>(kv->count));
  if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

std::string GgufFile::require_string(std::string_view key) const {
  const std::optional<std::string_view> v = get_string(key);
  if (!v) impl_->fail_key(key, "is missing");
  return std::string(*v);
}

std::uint64_t GgufFile::require_uint(std::string_view key) const {
  const std::optional<std::uint64_t> v = get_uint(key);
  if (!v) impl_->fail_key(key, "is missing");
  return *v;
}

namespace {

std::string format_scalar(GgufValueType t, const std::byte* p) {
  const auto fmt = [](auto v) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
  };
  switch (t) {
    case GgufValueType::u8:
      return fmt(load<std::uint8_t>(p));
    case GgufValueType::i8:
      return fmt(load<std::int8_t>(p));
    case GgufValueType::u16:
      return fmt(load<std::uint16_t>(p));
    case GgufValueType::i16:
      return fmt(load<std::int16_t>(p));
    case GgufValueType::u32:
      return fmt(load<std::uint32_t>(p));
    case GgufValueType::i32:
      return fmt(load<std::int32_t>(p));
    case GgufValueType::u64:
      return fmt(load<std::uint64_t>(p));
    case GgufValueType::i64:
      return fmt(load<std::int64_t>(p));
    case GgufValueType::f32:
      return fmt(load<float>(p));
    case GgufValueType::f64:
      return fmt(load<double>(p));
    case GgufValueType::boolean:
      return load<std::uint8_t>(p) != 0 ? "true" : "false";
    case GgufValueType::string:
    case GgufValueType::array:
      break;
  }
  return "?";
}

}  // namespace

std::optional<std::string> GgufFile::describe(std::string_view key, std::size_t max_elems) const {
  const Kv* kv = impl_->find(key);
  if (kv == nullptr) return std::nullopt;
  const auto as_text = [](std::span<const std::byte> b) {
    return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
  };
  constexpr std::size_t kMaxString = 64;
  if (kv->type == GgufValueType::string) return quoted(as_text(kv->value), kMaxString);
  if (kv->type != GgufValueType::array) return format_scalar(kv->type, kv->value.data());
  // Appended piece by piece: GCC 12 reports a false -Wrestrict on "[" + std::to_string(...) here.
  std::string out = "[";
  out += std::to_string(kv->count);
  out += " x ";
  out += gguf_value_type_name(kv->elem_type);
  const std::uint64_t shown = std::min<std::uint64_t>(kv->count, max_elems);
  std::size_t pos = 0;
  for (std::uint64_t i = 0; i < shown; ++i) {
    out += i == 0 ? ": " : ", ";
    if (kv->elem_type == GgufValueType::string) {
      const auto n = static_cast<std::size_t>(load<std::uint64_t>(kv->value.data() + pos));
      out += quoted(as_text(kv->value.subspan(pos + 8, n)), kMaxString);
      pos += 8 + n;
    } else {
      out += format_scalar(kv->elem_type, kv->value.data() + pos);
      pos += scalar_bytes(kv->elem_type);
    }
  }
  if (shown < kv->count) out += ", ...";
  return out + "]";
}

}  // namespace kvcache::llama
