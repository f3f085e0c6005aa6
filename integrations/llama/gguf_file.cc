#include "llama/gguf_file.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <utility>

#include "kvcache/error.h"
#include "llama/binary_io.h"
#include "llama/mapped_file.h"

namespace kvcache::llama {
namespace {

constexpr std::uint32_t kDefaultAlignment = 32;
constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
// The least bytes one key/value can take (u64 key length, u32 type, a 1-byte value) and one tensor
// info (u64 name length, u32 n_dims, one u64 dim, u32 type, u64 offset): bounds for the counts.
constexpr std::uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr std::uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

/// Size of a fixed-size value type, 0 for string and array.
std::size_t scalar_bytes(GgufValueType t) {
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

bool is_integer(GgufValueType t) {
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
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// ggml's name for a raw type number, for messages about types the runtime does not support.
std::string ggml_raw_type_name(std::uint32_t raw) {
  static constexpr const char* kNames[] = {"f32",
                                           "f16",
                                           "q4_0",
                                           "q4_1",
                                           "q4_2 (removed)",
                                           "q4_3 (removed)",
                                           "q5_0",
                                           "q5_1",
                                           "q8_0",
                                           "q8_1",
                                           "q2_K",
                                           "q3_K",
                                           "q4_K",
                                           "q5_K",
                                           "q6_K",
                                           "q8_K",
                                           "iq2_xxs",
                                           "iq2_xs",
                                           "iq3_xxs",
                                           "iq1_s",
                                           "iq4_nl",
                                           "iq3_s",
                                           "iq2_s",
                                           "iq4_xs",
                                           "i8",
                                           "i16",
                                           "i32",
                                           "i64",
                                           "f64",
                                           "iq1_m",
                                           "bf16",
                                           "q4_0_4_4 (removed)",
                                           "q4_0_4_8 (removed)",
                                           "q4_0_8_8 (removed)",
                                           "tq1_0",
                                           "tq2_0",
                                           "iq4_nl_4_4 (removed)",
                                           "iq4_nl_4_8 (removed)",
                                           "iq4_nl_8_8 (removed)",
                                           "mxfp4"};
  if (raw < std::size(kNames)) return kNames[raw];
  return "unknown";
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

/// A bounds-checked cursor over the mapped file. `where` says what is being read ("key
/// 'general.name'", "tensor 'output.weight'") and goes into every message.
class Parser {
 public:
  Parser(std::span<const std::byte> data, const std::string& label) : data_(data), label_(label) {}

  [[noreturn]] void fail(std::string_view message) const {
    std::string m = label_ + ": ";
    if (!where_.empty()) m += where_ + ": ";
    throw FormatError(m + std::string(message));
  }

  void set_where(std::string where) { where_ = std::move(where); }
  std::size_t pos() const { return pos_; }
  /// The bytes read since offset `start` (a view into the file).
  std::span<const std::byte> since(std::size_t start) const { return data_.subspan(start, pos_ - start); }
  std::size_t remaining() const { return data_.size() - pos_; }

  /// The next `n` bytes; `field` names them in the message when the file is too short.
  std::span<const std::byte> take(std::uint64_t n, std::string_view field) {
    if (n > remaining()) {
      fail("truncated: " + std::string(field) + " needs " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos_) + ", but the file has " + std::to_string(data_.size()) + " bytes");
    }
    const auto out = data_.subspan(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return out;
  }
  std::uint32_t u32(std::string_view field) { return load<std::uint32_t>(take(4, field).data()); }
  std::uint64_t u64(std::string_view field) { return load<std::uint64_t>(take(8, field).data()); }

  /// A GGUF string (u64 length, bytes) as a view into the file.
  std::string_view string(std::string_view field) {
    const std::uint64_t n = u64(std::string(field) + " length");
    if (n > remaining()) {
      fail(std::string(field) + " length " + std::to_string(n) + " exceeds the " +
           std::to_string(remaining()) + " bytes left in the file");
    }
    const auto b = take(n, field);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

 private:
  std::span<const std::byte> data_;
  std::size_t pos_ = 0;
  const std::string& label_;
  std::string where_;
};

GgufValueType checked_value_type(Parser& p, std::uint32_t raw, std::string_view what) {
  if (raw > static_cast<std::uint32_t>(GgufValueType::f64)) {
    p.fail("unknown " + std::string(what) + " " + std::to_string(raw) + " (GGUF defines 0..12)");
  }
  return static_cast<GgufValueType>(raw);
}

void check_bools(Parser& p, std::span<const std::byte> b) {
  for (std::size_t i = 0; i < b.size(); ++i) {
    const auto v = static_cast<unsigned>(b[i]);
    if (v > 1) {
      p.fail("boolean value " + std::to_string(v) + (b.size() > 1 ? " at element " + std::to_string(i) : "") +
             " is neither 0 nor 1");
    }
  }
}

/// Reads the value of `kv` (whose type is set) at the cursor.
void read_value(Parser& p, Kv& kv) {
  if (kv.type == GgufValueType::string) {
    const std::string_view s = p.string("string value");
    kv.value = std::as_bytes(std::span(s.data(), s.size()));
    return;
  }
  if (kv.type != GgufValueType::array) {
    kv.value = p.take(scalar_bytes(kv.type), std::string(gguf_value_type_name(kv.type)) + " value");
    if (kv.type == GgufValueType::boolean) check_bools(p, kv.value);
    return;
  }
  kv.elem_type = checked_value_type(p, p.u32("array element type"), "array element type");
  if (kv.elem_type == GgufValueType::array)
    p.fail("arrays of arrays are not supported (ggml refuses them too)");
  kv.count = p.u64("array length");
  const std::size_t start = p.pos();
  if (kv.elem_type == GgufValueType::string) {
    // Each element has at least its u64 length.
    if (kv.count > p.remaining() / 8) {
      p.fail("array length " + std::to_string(kv.count) + " (of strings) is more than the " +
             std::to_string(p.remaining()) + " bytes left could hold");
    }
    for (std::uint64_t i = 0; i < kv.count; ++i) p.string("string element " + std::to_string(i));
    kv.value = p.since(start);
    return;
  }
  const std::size_t elem = scalar_bytes(kv.elem_type);
  if (kv.count > p.remaining() / elem) {
    p.fail("array length " + std::to_string(kv.count) + " (of " +
           std::string(gguf_value_type_name(kv.elem_type)) + ") is more than the " +
           std::to_string(p.remaining()) + " bytes left could hold");
  }
  kv.value = p.take(kv.count * elem, "array elements");
  if (kv.elem_type == GgufValueType::boolean) check_bools(p, kv.value);
}

/// "\\xNN" for a byte in messages.
std::string hex_byte(unsigned char c) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return {'\\', 'x', kDigits[c >> 4], kDigits[c & 15]};
}

/// `s` between `quote`s for a message: printable ASCII as is, other bytes (and the quote) as \xNN,
/// cut after `max` bytes. Keys and names come from the file: they may be long or binary.
std::string quoted(std::string_view s, std::size_t max = 128, char quote = '"') {
  std::string out(1, quote);
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f && c != quote && c != '\\') ? std::string(1, s[i]) : hex_byte(c);
  }
  out += quote;
  if (s.size() > max) out += "...";
  return out;
}

std::uint64_t round_up(std::uint64_t x, std::uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

/// Memory alignment a tensor type's data needs for kernels to read it with plain loads: f32 needs
/// 4; f16, bf16 and the quantized blocks (whose scales are f16) need 2.
std::uint64_t natural_alignment(GgmlType t) { return t == GgmlType::f32 ? 4 : 2; }

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8:
      return "u8";
    case GgufValueType::i8:
      return "i8";
    case GgufValueType::u16:
      return "u16";
    case GgufValueType::i16:
      return "i16";
    case GgufValueType::u32:
      return "u32";
    case GgufValueType::i32:
      return "i32";
    case GgufValueType::f32:
      return "f32";
    case GgufValueType::boolean:
      return "bool";
    case GgufValueType::string:
      return "string";
    case GgufValueType::array:
      return "array";
    case GgufValueType::u64:
      return "u64";
    case GgufValueType::i64:
      return "i64";
    case GgufValueType::f64:
      return "f64";
  }
  return "?";
}

struct GgufFile::Impl {
  std::filesystem::path path;
  std::string label;  ///< "GGUF file '<path>'"
  MappedFile map;
  std::uint32_t version = 0;
  std::uint32_t alignment = kDefaultAlignment;
  std::uint64_t data_offset = 0;
  std::vector<Kv> kvs;                                             ///< file order
  std::unordered_map<std::string_view, std::size_t> kv_index;      ///< key -> index in kvs
  std::vector<GgufTensor> tensors;                                 ///< file order
  std::unordered_map<std::string_view, std::size_t> tensor_index;  ///< name (in the mapping) -> index

  Impl(const std::filesystem::path& p, std::string l) : path(p), label(std::move(l)), map(p, "GGUF file") {}

  void parse();
  void parse_tensor_infos(Parser& p, std::uint64_t n_tensors);
  void check_tensor_data();

  /// The key/value for `key`, or null.
  const Kv* find(std::string_view key) const {
    const auto it = kv_index.find(key);
    return it == kv_index.end() ? nullptr : &kvs[it->second];
  }
  [[noreturn]] void fail_key(std::string_view key, std::string_view message) const {
    throw FormatError(label + ": key " + quoted(key, 128, '\'') + ": " + std::string(message));
  }
  [[noreturn]] void wrong_type(const Kv& kv, std::string_view expected) const {
    std::string found(gguf_value_type_name(kv.type));
    if (kv.type == GgufValueType::array) found += " of " + std::string(gguf_value_type_name(kv.elem_type));
    fail_key(kv.key, "expected " + std::string(expected) + ", found " + found);
  }
  /// The integer value of `kv` as (negative, magnitude-or-value): value = negative ? -(2^64 - u) : u.
  std::pair<bool, std::uint64_t> integer(const Kv& kv, std::string_view expected) const;
  std::span<const std::byte> array_of(const Kv& kv, GgufValueType elem, std::string_view expected) const {
    if (kv.type != GgufValueType::array || kv.elem_type != elem) wrong_type(kv, expected);
    return kv.value;
  }
};

void GgufFile::Impl::parse() {
  const std::span<const std::byte> bytes = map.bytes();
  Parser p(bytes, label);
  const auto magic = p.take(4, "magic");
  if (std::memcmp(magic.data(), "GGUF", 4) != 0) {
    const std::string_view found(reinterpret_cast<const char*>(magic.data()), magic.size());
    p.fail("bad magic " + quoted(found) + ": not a GGUF file (expected \"GGUF\")");
  }
  version = p.u32("version");
  if (version == 1) {
    p.fail(
        "unsupported GGUF version 1 (files from before August 2023; convert the model again with a current "
        "llama.cpp)");
  }
  if (version != 2 && version != 3) {
    const std::uint32_t swapped =
        (version >> 24) | ((version >> 8) & 0xff00) | ((version << 8) & 0xff0000) | (version << 24);
    if (swapped >= 1 && swapped <= 3) p.fail("big-endian GGUF files are not supported");
    p.fail("unsupported GGUF version " + std::to_string(version) + " (this reader reads versions 2 and 3)");
  }
  const std::uint64_t n_tensors = p.u64("tensor count");
  const std::uint64_t n_kv = p.u64("metadata key/value count");
  // The counts are bounded by what the rest of the file could hold before anything is allocated.
  if (n_kv > p.remaining() / kMinKvBytes) {
    p.fail("metadata key/value count " + std::to_string(n_kv) + " is more than the " +
           std::to_string(p.remaining()) + " bytes left could hold");
  }
  if (n_tensors > (p.remaining() - n_kv * kMinKvBytes) / kMinTensorInfoBytes) {
    p.fail("tensor count " + std::to_string(n_tensors) + " is more than the " +
           std::to_string(p.remaining()) + " bytes left could hold");
  }
  kvs.reserve(static_cast<std::size_t>(n_kv));
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    p.set_where("key/value " + std::to_string(i) + " of " + std::to_string(n_kv));
    Kv kv;
    kv.key = p.string("key");
    p.set_where("key " + quoted(kv.key, 128, '\''));
    kv.type = checked_value_type(p, p.u32("value type"), "value type");
    read_value(p, kv);
    if (!kv_index.emplace(kv.key, kvs.size()).second) p.fail("duplicate key");
    kvs.push_back(kv);
  }
  if (const Kv* a = find("general.alignment")) {
    p.set_where("key 'general.alignment'");
    if (a->type != GgufValueType::u32) {
      p.fail("expected u32, found " + std::string(gguf_value_type_name(a->type)));
    }
    alignment = load<std::uint32_t>(a->value.data());
    if (alignment == 0 || !std::has_single_bit(alignment)) {
      p.fail("alignment " + std::to_string(alignment) + " is not a nonzero power of two");
    }
  }
  parse_tensor_infos(p, n_tensors);
  data_offset = round_up(p.pos(), alignment);
  check_tensor_data();
}

void GgufFile::Impl::parse_tensor_infos(Parser& p, std::uint64_t n_tensors) {
  tensors.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    p.set_where("tensor info " + std::to_string(i) + " of " + std::to_string(n_tensors));
    const std::string_view name = p.string("tensor name");
    p.set_where("tensor " + quoted(name, 128, '\''));
    GgufTensor t;
    t.name = std::string(name);
    const std::uint32_t n_dims = p.u32("n_dims");
    if (n_dims < 1 || n_dims > kMaxDims) p.fail("n_dims " + std::to_string(n_dims) + " is not in 1..4");
    std::uint64_t n_elements = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const std::string field = "dims[" + std::to_string(d) + "]";
      const std::uint64_t dim = p.u64(field);
      if (dim == 0) p.fail(field + " is 0");
      // ggml keeps dims as int64: the element count must fit one.
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / n_elements) {
        p.fail("the element count overflows at " + field + " = " + std::to_string(dim));
      }
      n_elements *= dim;
      t.dims.push_back(dim);
    }
    const std::uint32_t raw_type = p.u32("type");
    const std::optional<GgmlType> type = ggml_type_from_raw(raw_type);
    if (!type) {
      p.fail("tensor type " + std::to_string(raw_type) + " (" + ggml_raw_type_name(raw_type) +
             ") is not supported (supported: f32, f16, bf16, q8_0, q4_0, q4_K, q6_K)");
    }
    t.type = *type;
    const std::uint32_t block = ggml_block_elems(t.type);
    if (t.dims[0] % block != 0) {
      p.fail("dims[0] = " + std::to_string(t.dims[0]) + " is not a multiple of " +
             std::string(ggml_type_name(t.type)) + "'s block size " + std::to_string(block));
    }
    t.offset = p.u64("offset");
    if (t.offset % alignment != 0) {
      p.fail("offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
             std::to_string(alignment));
    }
    if (!tensor_index.emplace(name, tensors.size()).second) p.fail("duplicate tensor name");
    tensors.push_back(std::move(t));
  }
}

void GgufFile::Impl::check_tensor_data() {
  const std::span<const std::byte> bytes = map.bytes();
  const std::uint64_t size = bytes.size();
  const auto tensor_fail = [&](const GgufTensor& t, const std::string& message) {
    throw FormatError(label + ": tensor " + quoted(t.name, 128, '\'') + ": " + message);
  };
  for (GgufTensor& t : tensors) {
    // n_elements / block * block_bytes, computed as blocks per row times rows so that nothing
    // overflows: a row is at most 2^40 blocks (ggml_row_bytes), rows are checked against the file.
    const std::optional<std::size_t> row_bytes = ggml_row_bytes(t.type, t.dims[0]);
    if (!row_bytes) tensor_fail(t, "dims[0] = " + std::to_string(t.dims[0]) + " is too large");
    const std::uint64_t rows = t.n_elements() / t.dims[0];
    const std::uint64_t space = data_offset <= size ? size - data_offset : 0;
    const std::uint64_t start = t.offset;
    if (start > space || rows > (space - start) / *row_bytes) {
      const std::string need = rows > std::numeric_limits<std::uint64_t>::max() / *row_bytes
                                   ? std::string("more than 2^64")
                                   : std::to_string(rows * *row_bytes);
      tensor_fail(t, "data of " + need + " bytes at offset " + std::to_string(t.offset) + " (file offset " +
                         std::to_string(data_offset + t.offset) + ") extends past the end of the file (" +
                         std::to_string(size) + " bytes)");
    }
    const std::uint64_t n_bytes = rows * *row_bytes;
    const std::uint64_t file_offset = data_offset + t.offset;
    // The mapping starts page aligned, so the file offset decides the address's alignment.
    if (file_offset % natural_alignment(t.type) != 0) {
      tensor_fail(t, "data at file offset " + std::to_string(file_offset) + " is not aligned to " +
                         std::to_string(natural_alignment(t.type)) + " bytes, as " +
                         std::string(ggml_type_name(t.type)) + " needs");
    }
    t.data = bytes.subspan(static_cast<std::size_t>(file_offset), static_cast<std::size_t>(n_bytes));
  }
  // No two tensors may share bytes: a writer lays them out one after the other.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return tensors[a].offset < tensors[b].offset; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const GgufTensor& prev = tensors[order[i - 1]];
    const GgufTensor& cur = tensors[order[i]];
    if (prev.offset + prev.data.size() > cur.offset) {
      tensor_fail(cur, "data [" + std::to_string(cur.offset) + ", " +
                           std::to_string(cur.offset + cur.data.size()) + ") overlaps tensor " +
                           quoted(prev.name, 128, '\'') + " [" + std::to_string(prev.offset) + ", " +
                           std::to_string(prev.offset + prev.data.size()) + ")");
    }
  }
}

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

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::~GgufFile() = default;

std::shared_ptr<const GgufFile> GgufFile::open(const std::filesystem::path& path) {
  auto impl = std::make_unique<Impl>(path, file_label("GGUF file", path));
  impl->parse();
  // The constructor is private: a local subclass (which has this function's access) lets
  // make_shared build the object.
  struct Shared : GgufFile {
    explicit Shared(std::unique_ptr<Impl> i) : GgufFile(std::move(i)) {}
  };
  return std::make_shared<const Shared>(std::move(impl));
}

const std::filesystem::path& GgufFile::path() const noexcept { return impl_->path; }
std::uint32_t GgufFile::version() const noexcept { return impl_->version; }
std::uint32_t GgufFile::alignment() const noexcept { return impl_->alignment; }
std::uint64_t GgufFile::data_offset() const noexcept { return impl_->data_offset; }
std::uint64_t GgufFile::file_size() const noexcept { return impl_->map.bytes().size(); }
const std::string& GgufFile::label() const noexcept { return impl_->label; }

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

std::span<const GgufTensor> GgufFile::tensors() const noexcept { return impl_->tensors; }

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  const auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

std::uint64_t GgufTensor::n_elements() const {
  std::uint64_t n = 1;
  for (std::uint64_t d : dims) n *= d;
  return n;
}

WeightMatrix GgufTensor::matrix() const {
  const std::uint64_t cols = dims.empty() ? 0 : dims[0];
  const std::uint64_t rows = cols == 0 ? 0 : n_elements() / cols;
  if (cols > std::numeric_limits<std::uint32_t>::max() || rows > std::numeric_limits<std::uint32_t>::max()) {
    throw FormatError("tensor " + quoted(name, 128, '\'') + ": " + std::to_string(rows) + " x " +
                      std::to_string(cols) + " does not fit a matrix with 32-bit rows and columns");
  }
  WeightMatrix m;
  m.type = type;
  m.rows = static_cast<std::uint32_t>(rows);
  m.cols = static_cast<std::uint32_t>(cols);
  m.data = data.data();
  m.row_bytes = ggml_row_bytes(type, cols).value_or(0);
  return m;
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
  std::string out =
      "[" + std::to_string(kv->count) + " x " + std::string(gguf_value_type_name(kv->elem_type));
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
