// GGUF parsing and validation (GgufFile::open) and tensor access. Metadata getters are in
// gguf_metadata.cc; the state both share is in gguf_file_impl.h.
#include "llama/gguf_file.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "llama/binary_io.h"
#include "llama/gguf_file_impl.h"

namespace kvcache::llama {
namespace gguf_detail {

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

}  // namespace gguf_detail

namespace {

using gguf_detail::Kv;
using gguf_detail::load;
using gguf_detail::Parser;
using gguf_detail::quoted;
using gguf_detail::scalar_bytes;

constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
// The least bytes one key/value can take (u64 key length, u32 type, a 1-byte value) and one tensor
// info (u64 name length, u32 n_dims, one u64 dim, u32 type, u64 offset): bounds for the counts.
constexpr std::uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr std::uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

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

/// ggml's name for a raw type number, for messages about types the runtime does not support.
std::string ggml_raw_type_name(std::uint32_t raw) {
  // A table indexed by type number.
  // clang-format off
  static constexpr const char* kNames[] = {
      "f32", "f16", "q4_0", "q4_1", "q4_2 (removed)", "q4_3 (removed)", "q5_0", "q5_1", "q8_0", "q8_1",
      "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl",
      "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m", "bf16", "q4_0_4_4 (removed)",
      "q4_0_4_8 (removed)", "q4_0_8_8 (removed)", "tq1_0", "tq2_0", "iq4_nl_4_4 (removed)",
      "iq4_nl_4_8 (removed)", "iq4_nl_8_8 (removed)", "mxfp4"};
  // clang-format on
  if (raw < std::size(kNames)) return kNames[raw];
  return "unknown";
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

void GgufFile::Impl::parse_tensor_infos(gguf_detail::Parser& p, std::uint64_t n_tensors) {
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

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::~GgufFile() = default;

std::shared_ptr<const GgufFile> GgufFile::open(const std::filesystem::path& path, FileResidence residence) {
  auto impl = std::make_unique<Impl>(path, file_label("GGUF file", path), residence);
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

std::span<const GgufTensor> GgufFile::tensors() const noexcept { return impl_->tensors; }

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  const auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

namespace {

std::string dims_text(std::span<const std::uint64_t> dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(dims[i]);
  }
  out += "]";
  return out;
}

}  // namespace

const GgufTensor& GgufFile::require_tensor(std::string_view name, std::span<const std::uint64_t> dims) const {
  const GgufTensor* t = find_tensor(name);
  if (t == nullptr) fail("tensor " + quoted(name, 128, '\'') + " is missing");
  if (!std::equal(t->dims.begin(), t->dims.end(), dims.begin(), dims.end())) {
    fail("tensor " + quoted(name, 128, '\'') + ": dims " + dims_text(t->dims) + ", expected " +
         dims_text(dims));
  }
  return *t;
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

}  // namespace kvcache::llama
