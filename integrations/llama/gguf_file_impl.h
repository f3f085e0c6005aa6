// Internal to gguf_file.cc and gguf_metadata.cc: GgufFile's state (the mapping and what parsing
// found in it) and the helpers both files use. Not installed, not for other code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvcache/error.h"
#include "llama/gguf_file.h"
#include "llama/mapped_file.h"

namespace kvcache::llama {
namespace gguf_detail {

constexpr std::uint32_t kDefaultAlignment = 32;

/// Size of a fixed-size value type, 0 for string and array.
inline std::size_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean:
      return 1;
    case GgufValueType::u16:
    case GgufValueType::i16:
      return 2;
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32:
      return 4;
    case GgufValueType::u64:
    case GgufValueType::i64:
    case GgufValueType::f64:
      return 8;
    case GgufValueType::string:
    case GgufValueType::array:
      return 0;
  }
  return 0;
}

inline bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::u16:
    case GgufValueType::i16:
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::u64:
    case GgufValueType::i64:
      return true;
    default:
      return false;
  }
}

template <class T>
inline T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// "\\xNN" for a byte in messages.
inline std::string hex_byte(unsigned char c) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return {'\\', 'x', kDigits[c >> 4], kDigits[c & 15]};
}

/// `s` between `quote`s for a message: printable ASCII as is, other bytes (and the quote) as \xNN,
/// cut after `max` bytes. Keys and names come from the file: they may be long or binary.
inline std::string quoted(std::string_view s, std::size_t max = 128, char quote = '"') {
  std::string out(1, quote);
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f && c != quote && c != '\\') ? std::string(1, s[i]) : hex_byte(c);
  }
  out += quote;
  if (s.size() > max) out += "...";
  return out;
}

/// One metadata key/value, pointing into the mapping.
struct Kv {
  std::string_view key;
  GgufValueType type = GgufValueType::u8;
  GgufValueType elem_type = GgufValueType::u8;  ///< arrays only
  std::uint64_t count = 0;                      ///< arrays only: number of elements
  /// Scalars: the value's bytes; strings: the characters (no length); arrays: the elements (after
  /// the element type and count), strings there still length-prefixed.
  std::span<const std::byte> value;
};

class Parser;  // gguf_file.cc

}  // namespace gguf_detail

struct GgufFile::Impl {
  std::filesystem::path path;
  std::string label;  ///< "GGUF file '<path>'"
  MappedFile map;
  std::uint32_t version = 0;
  std::uint32_t alignment = gguf_detail::kDefaultAlignment;
  std::uint64_t data_offset = 0;
  std::vector<gguf_detail::Kv> kvs;                                ///< file order
  std::unordered_map<std::string_view, std::size_t> kv_index;      ///< key -> index in kvs
  std::vector<GgufTensor> tensors;                                 ///< file order
  std::unordered_map<std::string_view, std::size_t> tensor_index;  ///< name (in the mapping) -> index

  Impl(const std::filesystem::path& p, std::string l, FileResidence residence)
      : path(p), label(std::move(l)), map(p, "GGUF file", residence) {}

  void parse();
  void parse_tensor_infos(gguf_detail::Parser& p, std::uint64_t n_tensors);
  void check_tensor_data();

  /// The key/value for `key`, or null.
  const gguf_detail::Kv* find(std::string_view key) const {
    const auto it = kv_index.find(key);
    return it == kv_index.end() ? nullptr : &kvs[it->second];
  }
  [[noreturn]] void fail_key(std::string_view key, std::string_view message) const {
    throw FormatError(label + ": key " + gguf_detail::quoted(key, 128, '\'') + ": " + std::string(message));
  }
  [[noreturn]] void wrong_type(const gguf_detail::Kv& kv, std::string_view expected) const {
    std::string found(gguf_value_type_name(kv.type));
    if (kv.type == GgufValueType::array) found += " of " + std::string(gguf_value_type_name(kv.elem_type));
    fail_key(kv.key, "expected " + std::string(expected) + ", found " + found);
  }
  /// The integer value of `kv` as (negative, magnitude-or-value): value = negative ? -(2^64 - u) : u.
  std::pair<bool, std::uint64_t> integer(const gguf_detail::Kv& kv, std::string_view expected) const;
  std::span<const std::byte> array_of(const gguf_detail::Kv& kv, GgufValueType elem,
                                      std::string_view expected) const {
    if (kv.type != GgufValueType::array || kv.elem_type != elem) wrong_type(kv, expected);
    return kv.value;
  }
};

}  // namespace kvcache::llama
