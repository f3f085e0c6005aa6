// Hostile and truncated GGUF files: each must be a FormatError naming the file and the field (key,
// tensor) at fault, never a crash or an out-of-bounds read (run under ASan/UBSan). The files are
// made by GgufWriter and then edited byte by byte.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kvcache/error.h"
#include "llama/gguf_file.h"
#include "llama/gguf_writer.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

using Bytes = std::vector<std::byte>;
constexpr std::uint64_t kHuge = std::numeric_limits<std::uint64_t>::max();

/// A small model: 4 key/values of several types and (unless !tensors) 3 tensors (f32, q8_0, f16,
/// one of them 4-D). Keys and tensor names of equal lengths, so that one can be renamed into
/// another in place.
Bytes tiny_model(std::uint32_t alignment = 32, bool tensors = true) {
  GgufWriter w(alignment);
  w.add_string("t.arch", "llama");
  w.add_u32("t.cnt1", 5);
  w.add_bool("t.flag", true);
  const std::vector<std::string> names = {"a", "bb", "ccc"};
  w.add_string_array("t.name", names);
  if (!tensors) return w.bytes();
  const std::vector<float> f(8, 0.5f);
  w.add_tensor_f32("w.aa", std::vector<std::uint64_t>{4, 2}, f);
  w.add_tensor("w.bb", GgmlType::q8_0, std::vector<std::uint64_t>{32, 2}, Bytes(68, std::byte{1}));
  w.add_tensor("w.cc", GgmlType::f16, std::vector<std::uint64_t>{2, 1, 1, 2}, Bytes(8, std::byte{2}));
  return w.bytes();
}

std::size_t find(const Bytes& b, std::string_view needle) {
  const auto* p = reinterpret_cast<const char*>(b.data());
  const std::size_t at = std::string_view(p, b.size()).find(needle);
  REQUIRE_MESSAGE(at != std::string_view::npos, needle);
  return at;
}
/// Offset of the value type of `key` (just after the key string).
std::size_t value_type_at(const Bytes& b, std::string_view key) { return find(b, key) + key.size(); }
/// Offset of the n_dims field of tensor `name` (just after its name).
std::size_t n_dims_at(const Bytes& b, std::string_view name) { return find(b, name) + name.size(); }
/// Offset of the type field of tensor `name` (after n_dims and the dims).
std::size_t tensor_type_at(const Bytes& b, std::string_view name) {
  const std::size_t at = n_dims_at(b, name);
  std::uint32_t n_dims;
  std::memcpy(&n_dims, b.data() + at, 4);
  return at + 4 + 8 * std::size_t{n_dims};
}
std::size_t tensor_offset_at(const Bytes& b, std::string_view name) { return tensor_type_at(b, name) + 4; }

void put_u32(Bytes& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void put_u64(Bytes& b, std::size_t at, std::uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
std::uint64_t get_u64(const Bytes& b, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
void rename_in_place(Bytes& b, std::string_view from, std::string_view to) {
  REQUIRE(from.size() == to.size());
  std::memcpy(b.data() + find(b, from), to.data(), to.size());
}

/// The FormatError message for opening `bytes` (which must name the file).
std::string open_error(const Bytes& bytes) {
  TempFile f("gguf_bad", bytes);
  std::string msg = format_error_of(f, [&] { (void)GgufFile::open(f.path()); });
  // The file is named once as "GGUF file '<path>'", then what is wrong.
  CHECK_MESSAGE(msg.starts_with("GGUF file '" + f.str() + "': "), msg);
  return msg;
}

/// The message, which must contain every one of `parts`.
void expect_error(const Bytes& bytes, std::initializer_list<std::string_view> parts) {
  const std::string msg = open_error(bytes);
  for (std::string_view part : parts)
    CHECK_MESSAGE(msg.find(part) != std::string::npos, msg, " lacks: ", part);
}

Bytes cut(Bytes b, std::size_t n) {
  b.resize(n);
  return b;
}

}  // namespace

TEST_CASE("gguf bad: the tiny model itself opens") {
  const Bytes b = tiny_model();
  const TempFile f("gguf_tiny", b);
  const auto g = GgufFile::open(f.path());
  CHECK(g->tensors().size() == 3);
  CHECK(g->keys().size() == 4);
}

TEST_CASE("gguf bad: truncation at every byte of the header, metadata and tensor infos") {
  const Bytes b = tiny_model();
  const TempFile f("gguf_tiny", b);
  const auto g = GgufFile::open(f.path());
  const std::size_t infos_end = find(b, "w.cc") + 4 + 4 + 4 * 8 + 4 + 8;
  REQUIRE(infos_end <= g->data_offset());
  for (std::size_t n = 0; n < infos_end; ++n) {
    INFO("cut at " << n);
    const std::string msg = open_error(cut(b, n));
    // Either a field was cut short, or a count or length was found larger than what is left.
    const bool named =
        msg.find("truncated: ") != std::string::npos || msg.find("bytes left") != std::string::npos;
    CHECK_MESSAGE(named, msg);
  }
  // From the end of the tensor infos on, the header parses and the tensors' data is short (the
  // padding after the last tensor is optional).
  const GgufTensor& last = g->tensors().back();
  for (std::size_t n = infos_end; n < g->data_offset() + last.offset + last.data.size(); ++n) {
    INFO("cut at " << n);
    const std::string msg = open_error(cut(b, n));
    CHECK_MESSAGE(msg.find("extends past the end of the file") != std::string::npos, msg);
  }
}

TEST_CASE("gguf bad: truncation at each section boundary names the field") {
  const Bytes b = tiny_model();
  const auto open_tiny = [&] {
    const TempFile f("gguf_tiny", b);
    return GgufFile::open(f.path());
  };
  const auto g = open_tiny();
  expect_error(cut(b, 0), {"truncated: magic needs 4 bytes at offset 0, but the file has 0 bytes"});
  expect_error(cut(b, 4), {"truncated: version needs 4 bytes at offset 4"});
  expect_error(cut(b, 8), {"truncated: tensor count needs 8 bytes"});
  expect_error(cut(b, 16), {"truncated: metadata key/value count needs 8 bytes"});
  // The counts are checked against the bytes left before anything is read.
  expect_error(cut(b, 24), {"metadata key/value count 4 is more than the 0 bytes left could hold"});
  // Within the key/values of a file without tensors the counts pass (4 minimal key/values take 52
  // bytes), so the field itself is reported.
  const Bytes v = tiny_model(32, false);
  expect_error(cut(v, value_type_at(v, "t.name")), {"key 't.name': truncated: value type needs 4 bytes"});
  expect_error(cut(v, value_type_at(v, "t.name") + 4), {"key 't.name': truncated: array element type"});
  expect_error(cut(v, value_type_at(v, "t.name") + 8), {"key 't.name': truncated: array length"});
  expect_error(cut(v, value_type_at(v, "t.name") + 16),
               {"key 't.name': array length 3 (of strings) is more than the 0 bytes left could hold"});
  expect_error(cut(v, value_type_at(v, "t.name") + 16 + 8 + 1 + 8 + 2 + 8 + 1),
               {"key 't.name': string element 2 length 3 exceeds the 1 bytes left in the file"});
  // At the end of the key/values, what is left cannot hold 4 minimal key/values and 3 tensor infos.
  expect_error(cut(b, find(b, "w.aa") - 8), {"tensor count 3 is more than the"});
  expect_error(cut(b, n_dims_at(b, "w.cc")), {"tensor 'w.cc': truncated: n_dims needs 4 bytes"});
  expect_error(cut(b, n_dims_at(b, "w.cc") + 4 + 24), {"tensor 'w.cc': truncated: dims[3] needs 8 bytes"});
  expect_error(cut(b, tensor_type_at(b, "w.cc")), {"tensor 'w.cc': truncated: type needs 4 bytes"});
  expect_error(cut(b, tensor_offset_at(b, "w.cc")), {"tensor 'w.cc': truncated: offset needs 8 bytes"});
  // Each tensor's data: one byte short names that tensor.
  for (const GgufTensor& t : g->tensors()) {
    expect_error(cut(b, g->data_offset() + t.offset + t.data.size() - 1),
                 {"tensor '" + t.name + "': data of " + std::to_string(t.data.size()) + " bytes",
                  "extends past the end of the file"});
  }
}

TEST_CASE("gguf bad: wrong magic, versions 1 and 4, big-endian") {
  Bytes b = tiny_model();
  Bytes m = b;
  std::memcpy(m.data(), "GGML", 4);
  expect_error(m, {"bad magic \"GGML\": not a GGUF file"});
  // A llama2.c checkpoint is not a GGUF file.
  expect_error(read_bytes(model_path()), {"bad magic", "not a GGUF file"});
  expect_error(Bytes(3, std::byte{'G'}), {"truncated: magic"});
  put_u32(b, 4, 1);
  expect_error(b, {"unsupported GGUF version 1"});
  put_u32(b, 4, 4);
  expect_error(b, {"unsupported GGUF version 4 (this reader reads versions 2 and 3)"});
  put_u32(b, 4, 0x03000000);
  expect_error(b, {"big-endian GGUF files are not supported"});
  put_u32(b, 4, 2);  // v2 has the same layout
  const TempFile f("gguf_v2", b);
  CHECK(GgufFile::open(f.path())->version() == 2);
}

TEST_CASE("gguf bad: counts and lengths larger than the file could hold") {
  const Bytes b = tiny_model();
  for (std::uint64_t n : {kHuge, std::uint64_t{1} << 62, std::uint64_t{b.size()}}) {
    Bytes c = b;
    put_u64(c, 16, n);
    expect_error(c, {"metadata key/value count " + std::to_string(n) + " is more than the"});
    c = b;
    put_u64(c, 8, n);
    expect_error(c, {"tensor count " + std::to_string(n) + " is more than the"});
  }
  Bytes c = b;
  put_u64(c, 24, kHuge);  // the first key's length
  expect_error(c, {"key/value 0 of 4: key length 18446744073709551615 exceeds the"});
  c = b;
  put_u64(c, value_type_at(b, "t.arch") + 4, kHuge - 7);  // the string value's length
  expect_error(c, {"key 't.arch': string value length 18446744073709551608 exceeds the"});
  for (std::uint64_t n : {kHuge, kHuge / 8 + 1, std::uint64_t{1} << 40}) {
    c = b;
    put_u64(c, value_type_at(b, "t.name") + 8, n);  // the array length
    expect_error(c, {"key 't.name': array length " + std::to_string(n) + " (of strings) is more than"});
  }
  c = b;
  put_u64(c, value_type_at(b, "t.name") + 16, 1000);  // the first string element's length
  expect_error(c, {"key 't.name': string element 0 length 1000 exceeds the"});
  c = b;
  put_u64(c, find(b, "w.bb") - 8, kHuge);  // a tensor name's length
  expect_error(c, {"tensor info 1 of 3: tensor name length 18446744073709551615 exceeds the"});
}

TEST_CASE("gguf bad: value types: unknown, nested arrays, booleans other than 0 and 1") {
  const Bytes b = tiny_model();
  Bytes c = b;
  put_u32(c, value_type_at(b, "t.cnt1"), 13);
  expect_error(c, {"key 't.cnt1': unknown value type 13 (GGUF defines 0..12)"});
  c = b;
  put_u32(c, value_type_at(b, "t.name") + 4, 9);
  expect_error(c, {"key 't.name': arrays of arrays are not supported"});
  c = b;
  put_u32(c, value_type_at(b, "t.name") + 4, 77);
  expect_error(c, {"key 't.name': unknown array element type 77"});
  c = b;
  c[value_type_at(b, "t.flag") + 4] = std::byte{2};
  expect_error(c, {"key 't.flag': boolean value 2 is neither 0 nor 1"});
}

TEST_CASE("gguf bad: duplicate keys and duplicate tensor names") {
  const Bytes b = tiny_model();
  Bytes c = b;
  rename_in_place(c, "t.flag", "t.cnt1");
  expect_error(c, {"key 't.cnt1': duplicate key"});
  c = b;
  rename_in_place(c, "w.cc", "w.aa");
  expect_error(c, {"tensor 'w.aa': duplicate tensor name"});
}

TEST_CASE("gguf bad: general.alignment must be a u32 nonzero power of two") {
  const Bytes b = tiny_model(64);
  {
    const TempFile f("gguf_align64", b);
    CHECK(GgufFile::open(f.path())->alignment() == 64);
  }
  const std::size_t type_at = value_type_at(b, "general.alignment");
  for (std::uint32_t a : {0u, 3u, 48u, 0x80000001u}) {
    Bytes c = b;
    put_u32(c, type_at + 4, a);
    expect_error(
        c, {"key 'general.alignment': alignment " + std::to_string(a) + " is not a nonzero power of two"});
  }
  Bytes c = b;
  put_u32(c, type_at, static_cast<std::uint32_t>(GgufValueType::i32));
  expect_error(c, {"key 'general.alignment': expected u32, found i32"});
}

TEST_CASE("gguf bad: tensor offsets past the end, misaligned, or overlapping") {
  const Bytes b = tiny_model();
  for (std::uint64_t off : {std::uint64_t{1} << 40, kHuge - 31, std::uint64_t{b.size()} / 32 * 32}) {
    Bytes c = b;
    put_u64(c, tensor_offset_at(b, "w.cc"), off);
    expect_error(c,
                 {"tensor 'w.cc': data of 8 bytes at offset " + std::to_string(off), "extends past the end"});
  }
  Bytes c = b;
  put_u64(c, tensor_offset_at(b, "w.bb"), get_u64(b, tensor_offset_at(b, "w.bb")) + 4);
  expect_error(c, {"tensor 'w.bb': offset", "is not a multiple of the alignment 32"});
  // Same offset as another tensor, and a partial overlap (w.bb holds 68 bytes).
  c = b;
  put_u64(c, tensor_offset_at(b, "w.cc"), get_u64(b, tensor_offset_at(b, "w.aa")));
  expect_error(c, {"overlaps tensor", "w.aa", "w.cc"});
  c = b;
  put_u64(c, tensor_offset_at(b, "w.cc"), get_u64(b, tensor_offset_at(b, "w.bb")) + 64);
  expect_error(c, {"tensor 'w.cc': data [", "overlaps tensor 'w.bb'"});
}

TEST_CASE("gguf bad: tensor types, n_dims and dims") {
  const Bytes b = tiny_model();
  Bytes c = b;
  put_u32(c, tensor_type_at(b, "w.aa"), 6);
  expect_error(c, {"tensor 'w.aa': tensor type 6 (q5_0) is not supported (supported: f32"});
  c = b;
  put_u32(c, tensor_type_at(b, "w.aa"), 1000);
  expect_error(c, {"tensor 'w.aa': tensor type 1000 (unknown) is not supported"});
  for (std::uint32_t n : {0u, 5u, 0xffffffffu}) {
    c = b;
    put_u32(c, n_dims_at(b, "w.bb"), n);
    expect_error(c, {"tensor 'w.bb': n_dims " + std::to_string(n) + " is not in 1..4"});
  }
  c = b;
  put_u64(c, n_dims_at(b, "w.cc") + 4 + 16, 0);
  expect_error(c, {"tensor 'w.cc': dims[2] is 0"});
  c = b;
  put_u64(c, n_dims_at(b, "w.cc") + 4, std::uint64_t{1} << 32);
  put_u64(c, n_dims_at(b, "w.cc") + 4 + 8, std::uint64_t{1} << 31);
  expect_error(c, {"tensor 'w.cc': the element count overflows at dims[1] = 2147483648"});
  c = b;
  put_u64(c, n_dims_at(b, "w.cc") + 4 + 24, kHuge);
  expect_error(c, {"tensor 'w.cc': the element count overflows at dims[3]"});
  c = b;
  put_u64(c, n_dims_at(b, "w.bb") + 4, 48);
  expect_error(c, {"tensor 'w.bb': dims[0] = 48 is not a multiple of q8_0's block size 32"});
  // A shape that fits int64 but whose bytes are far beyond the file.
  c = b;
  put_u64(c, n_dims_at(b, "w.bb") + 4 + 8, std::uint64_t{1} << 50);
  expect_error(c, {"tensor 'w.bb': data of", "extends past the end"});
}

TEST_CASE("gguf bad: tensor data not aligned for its type when general.alignment is tiny") {
  // With alignment 1 the data section starts right after the tensor infos: pick a key length that
  // puts the single f32 tensor at an odd file offset.
  for (std::size_t pad = 0; pad < 4; ++pad) {
    GgufWriter w(1);
    w.add_string(std::string("k") + std::string(pad, 'x'), "v");
    w.add_tensor_f32("w", std::vector<std::uint64_t>{1}, std::vector<float>{1.0f});
    const Bytes b = w.bytes();
    const std::size_t data_at = b.size() - 4;
    INFO("data at " << data_at);
    if (data_at % 4 == 0) {
      const TempFile f("gguf_align1", b);
      CHECK(GgufFile::open(f.path())->tensors()[0].data.size() == 4);
    } else {
      expect_error(
          b, {"tensor 'w': data at file offset " + std::to_string(data_at) + " is not aligned to 4 bytes"});
    }
  }
}

TEST_CASE("gguf bad: keys and names with odd bytes are quoted and cut in messages") {
  GgufWriter w;
  w.add_string(std::string("k\n\x01") + std::string(300, 'y'), "v");
  Bytes b = w.bytes();
  put_u32(b, 24 + 8 + 303, 99);  // the value type
  const std::string msg = open_error(b);
  CHECK_MESSAGE(msg.find("key 'k\\x0a\\x01yyy") != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("y'...: unknown value type 99") != std::string::npos, msg);
  CHECK(msg.size() < 400);
}

TEST_CASE("gguf bad: a matrix view of a tensor too large for 32-bit rows is refused") {
  GgufTensor t;
  t.name = "huge";
  t.dims = {2, std::uint64_t{1} << 33};
  CHECK_THROWS_AS((void)t.matrix(), FormatError);
}

}  // namespace kvcache::llama::test
