// GgufFile on real files (the llama.cpp-converted stories260K and the vocabulary-only tokenizer
// files in ../shared) and GgufWriter -> GgufFile round trips of every value type and tensor type.
// Hostile files are in gguf_bad_file_test.cc.
#include "llama/gguf_file.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "contains.h"
#include "kvcache/error.h"
#include "llama/gguf_writer.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

std::filesystem::path gguf_model_path() { return shared_dir() / "models" / "stories260K.gguf"; }

std::vector<std::uint64_t> dims_of(const GgufFile& f, std::string_view name) {
  const GgufTensor* t = f.find_tensor(name);
  if (t == nullptr) return {};
  return t->dims;
}

/// Deterministic bytes for tensor data (the reader never decodes them).
std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((i * 131 + seed * 17 + 7) & 0xff);
  return b;
}

std::string key_error(const std::function<void()>& call) {
  try {
    call();
  } catch (const FormatError& e) {
    return e.what();
  }
  FAIL("expected FormatError");
  return {};
}

}  // namespace

TEST_CASE("gguf: stories260K.gguf has the llama2.c model's shape") {
  const auto f = GgufFile::open(gguf_model_path());
  CHECK(f->version() == 3);
  CHECK(f->alignment() == 32);
  CHECK(f->get_string("general.architecture") == "llama");
  CHECK(f->get_uint("llama.context_length") == 128u);
  CHECK(f->get_uint("llama.embedding_length") == 64u);
  CHECK(f->get_uint("llama.feed_forward_length") == 172u);
  CHECK(f->get_uint("llama.block_count") == 5u);
  CHECK(f->get_uint("llama.attention.head_count") == 8u);
  CHECK(f->get_uint("llama.attention.head_count_kv") == 4u);
  CHECK(f->get_string("tokenizer.ggml.model") == "llama");
  const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens);
  CHECK(tokens->size() == 512);
  CHECK((*tokens)[1] == "<s>");
  CHECK((*tokens)[2] == "</s>");
  CHECK((*tokens)[3 + 0x41] == "<0x41>");
  CHECK(f->get_f32_array("tokenizer.ggml.scores")->size() == 512);

  REQUIRE(f->tensors().size() == 48);
  for (const GgufTensor& t : f->tensors()) {
    CHECK_MESSAGE(t.type == GgmlType::f32, t.name);
    CHECK(t.data.size() == t.n_elements() * 4);
    CHECK(t.offset % 32 == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(t.data.data()) % 32 == 0);
    CHECK(f->find_tensor(t.name) == &t);
  }
  // dim 64, hidden 172, 5 layers, 8 heads of 8, 4 KV heads (kv dim 32), vocab 512; ne[0] first.
  CHECK(dims_of(*f, "token_embd.weight") == std::vector<std::uint64_t>{64, 512});
  CHECK(dims_of(*f, "output_norm.weight") == std::vector<std::uint64_t>{64});
  CHECK(dims_of(*f, "output.weight") == std::vector<std::uint64_t>{64, 512});
  for (int il = 0; il < 5; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    CHECK(dims_of(*f, b + "attn_norm.weight") == std::vector<std::uint64_t>{64});
    CHECK(dims_of(*f, b + "attn_q.weight") == std::vector<std::uint64_t>{64, 64});
    CHECK(dims_of(*f, b + "attn_k.weight") == std::vector<std::uint64_t>{64, 32});
    CHECK(dims_of(*f, b + "attn_v.weight") == std::vector<std::uint64_t>{64, 32});
    CHECK(dims_of(*f, b + "attn_output.weight") == std::vector<std::uint64_t>{64, 64});
    CHECK(dims_of(*f, b + "ffn_norm.weight") == std::vector<std::uint64_t>{64});
    CHECK(dims_of(*f, b + "ffn_gate.weight") == std::vector<std::uint64_t>{64, 172});
    CHECK(dims_of(*f, b + "ffn_up.weight") == std::vector<std::uint64_t>{64, 172});
    CHECK(dims_of(*f, b + "ffn_down.weight") == std::vector<std::uint64_t>{172, 64});
  }
  const WeightMatrix m = f->find_tensor("blk.4.ffn_down.weight")->matrix();
  CHECK(m.rows == 64);
  CHECK(m.cols == 172);
  CHECK(m.row_bytes == 172 * 4);
  CHECK(m.bytes() == f->find_tensor("blk.4.ffn_down.weight")->data.size());
  CHECK(f->find_tensor("no.such.tensor") == nullptr);
  const std::vector<std::uint64_t> q = {64, 64}, k = {64, 32};
  CHECK(&f->require_tensor("blk.0.attn_q.weight", q) == f->find_tensor("blk.0.attn_q.weight"));
  const std::string shape = key_error([&] { (void)f->require_tensor("blk.0.attn_k.weight", q); });
  CHECK(contains(shape, gguf_model_path().string()));
  CHECK(contains(shape, "tensor 'blk.0.attn_k.weight': dims [64, 32], expected [64, 64]"));
  CHECK(contains(key_error([&] { (void)f->require_tensor("blk.5.attn_k.weight", k); }),
                 "tensor 'blk.5.attn_k.weight' is missing"));
}

TEST_CASE("gguf: stories260K.gguf holds the llama2.c checkpoint's weights") {
  // The converter copies the float weights unchanged: the GGUF token embedding is the checkpoint's
  // first vocab * dim floats after its 7-int header.
  const auto f = GgufFile::open(gguf_model_path());
  const std::vector<std::byte> ck = read_bytes(model_path());
  const GgufTensor* emb = f->find_tensor("token_embd.weight");
  REQUIRE(emb != nullptr);
  REQUIRE(ck.size() >= 28 + emb->data.size());
  CHECK(std::memcmp(ck.data() + 28, emb->data.data(), emb->data.size()) == 0);
}

TEST_CASE("gguf: every shared vocabulary-only file opens with its tokenizer and no tensors") {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(shared_dir() / "data" / "tokenizers")) {
    if (entry.path().extension() != ".gguf") continue;
    ++n;
    const auto f = GgufFile::open(entry.path());
    INFO(entry.path().string());
    CHECK(f->version() == 3);
    CHECK(f->tensors().empty());
    const auto model = f->get_string("tokenizer.ggml.model");
    REQUIRE(model);
    CHECK((*model == "llama" || *model == "gpt2"));
    const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
    REQUIRE(tokens);
    CHECK(tokens->size() > 1000);
    CHECK(f->array_info("tokenizer.ggml.tokens")->size == tokens->size());
    if (*model == "gpt2") CHECK(f->get_string_array("tokenizer.ggml.merges")->size() > 1000);
    for (std::string_view k : f->keys()) CHECK(f->describe(k).has_value());
  }
  CHECK(n == 5);
}

TEST_CASE("gguf: every value type round-trips through the writer") {
  GgufWriter w;
  w.add_u8("t.u8", 200);
  w.add_i8("t.i8", -100);
  w.add_u16("t.u16", 60000);
  w.add_i16("t.i16", -30000);
  w.add_u32("t.u32", 4000000000u);
  w.add_i32("t.i32", -2000000000);
  w.add_u64("t.u64", std::numeric_limits<std::uint64_t>::max());
  w.add_i64("t.i64", std::numeric_limits<std::int64_t>::min());
  w.add_f32("t.f32", 1.5f);
  w.add_f64("t.f64", -0.125);
  w.add_bool("t.true", true);
  w.add_bool("t.false", false);
  w.add_string("t.string", "caf\xc3\xa9");
  w.add_string("t.empty", "");
  const std::vector<std::string> strings = {"<unk>", "", "\xe2\x96\x81the"};
  const std::vector<float> floats = {0.5f, -2.0f, 1e-30f};
  const std::vector<std::int32_t> ints = {-1, 0, 7};
  const std::vector<std::uint32_t> uints = {1, 4000000000u};
  w.add_string_array("t.strings", strings);
  w.add_f32_array("t.floats", floats);
  w.add_i32_array("t.ints", ints);
  w.add_u32_array("t.uints", uints);
  w.add_f32_array("t.no_floats", {});
  const TempFile file("gguf_values", w.bytes());
  const auto f = GgufFile::open(file.path());

  CHECK(f->keys().size() == 19);
  CHECK(f->keys().front() == "t.u8");
  CHECK(f->type_of("t.i16") == GgufValueType::i16);
  CHECK(f->type_of("t.strings") == GgufValueType::array);
  CHECK_FALSE(f->type_of("t.none").has_value());
  CHECK(f->get_uint("t.u8") == 200u);
  CHECK(f->get_int("t.i8") == -100);
  CHECK(f->get_uint("t.u16") == 60000u);
  CHECK(f->get_int("t.i16") == -30000);
  CHECK(f->get_u32("t.u32") == 4000000000u);
  CHECK(f->get_int("t.i32") == -2000000000);
  CHECK(f->get_uint("t.u64") == std::numeric_limits<std::uint64_t>::max());
  CHECK(f->get_int("t.i64") == std::numeric_limits<std::int64_t>::min());
  CHECK(f->get_float("t.f32") == 1.5);
  CHECK(f->get_float("t.f64") == -0.125);
  CHECK(f->get_bool("t.true") == true);
  CHECK(f->get_bool("t.false") == false);
  CHECK(f->get_string("t.string") == "caf\xc3\xa9");
  CHECK(f->get_string("t.empty") == "");
  CHECK(f->require_string("t.string") == "caf\xc3\xa9");
  const auto s = f->get_string_array("t.strings");
  REQUIRE(s);
  CHECK(std::equal(s->begin(), s->end(), strings.begin(), strings.end()));
  CHECK(f->get_f32_array("t.floats") == floats);
  CHECK(f->get_i32_array("t.ints") == ints);
  CHECK(f->array_info("t.uints")->type == GgufValueType::u32);
  CHECK(f->array_info("t.uints")->size == 2);
  CHECK(f->get_u32_array("t.uints") == uints);
  CHECK(f->get_f32_array("t.no_floats")->empty());
  CHECK(f->describe("t.strings") == "[3 x string: \"<unk>\", \"\", \"\\xe2\\x96\\x81the\"]");
  CHECK(f->describe("t.ints", 2) == "[3 x i32: -1, 0, ...]");
  CHECK(f->describe("t.f32") == "1.5");
  CHECK(f->describe("t.true") == "true");
  CHECK_FALSE(f->describe("t.none").has_value());
  // Absent keys are nullopt for every getter.
  CHECK_FALSE(f->has("t.none"));
  CHECK_FALSE(f->get_uint("t.none").has_value());
  CHECK_FALSE(f->get_string_array("t.none").has_value());
}

TEST_CASE("gguf: integer getters convert any integer type whose value fits, else name the key") {
  GgufWriter w;
  w.add_i32("n.pos", 12);
  w.add_i8("n.neg", -3);
  w.add_u64("n.big", std::uint64_t{1} << 63);
  w.add_u64("n.u33", std::uint64_t{1} << 32);
  w.add_string("n.text", "12");
  w.add_f32("n.float", 2.0f);
  const TempFile file("gguf_ints", w.bytes());
  const auto f = GgufFile::open(file.path());
  CHECK(f->get_uint("n.pos") == 12u);
  CHECK(f->get_u32("n.pos") == 12u);
  CHECK(f->get_int("n.pos") == 12);
  CHECK(f->get_int("n.neg") == -3);
  CHECK(f->get_uint("n.big") == std::uint64_t{1} << 63);

  const std::string neg = key_error([&] { (void)f->get_uint("n.neg"); });
  CHECK(contains(neg, file.str()));
  CHECK(contains(neg, "key 'n.neg'"));
  CHECK(contains(neg, "-3 is negative"));
  CHECK(contains(key_error([&] { (void)f->get_int("n.big"); }),
                 "key 'n.big': value 9223372036854775808 does not fit"));
  CHECK(contains(key_error([&] { (void)f->get_u32("n.u33"); }),
                 "key 'n.u33': value 4294967296 does not fit 32 bits"));
  CHECK(contains(key_error([&] { (void)f->get_uint("n.text"); }),
                 "key 'n.text': expected an unsigned integer, found string"));
  CHECK(
      contains(key_error([&] { (void)f->get_string("n.pos"); }), "key 'n.pos': expected string, found i32"));
  CHECK(contains(key_error([&] { (void)f->get_float("n.pos"); }), "expected f32 or f64, found i32"));
  CHECK(
      contains(key_error([&] { (void)f->get_bool("n.float"); }), "key 'n.float': expected bool, found f32"));
  CHECK(contains(key_error([&] { (void)f->get_f32_array("n.float"); }), "expected array of f32, found f32"));
  CHECK(contains(key_error([&] { (void)f->array_info("n.pos"); }), "expected an array, found i32"));
  CHECK(contains(key_error([&] { (void)f->require_uint("n.none"); }), "key 'n.none': is missing"));
  CHECK(contains(key_error([&] { (void)f->require_string("n.none"); }), file.str()));
  CHECK(contains(key_error([&] { f->fail("key 'x': made up"); }), file.str() + "': key 'x': made up"));
}

TEST_CASE("gguf: tensors of every supported type round-trip with their bytes in place") {
  struct Case {
    const char* name;
    GgmlType type;
    std::vector<std::uint64_t> dims;
  };
  const std::vector<Case> cases = {
      {"w.f32", GgmlType::f32, {3}},
      {"w.f16", GgmlType::f16, {5, 3}},
      {"w.bf16", GgmlType::bf16, {2, 2, 2}},
      {"w.q8_0", GgmlType::q8_0, {64, 3}},
      {"w.q4_0", GgmlType::q4_0, {32, 1, 2, 1}},
      {"w.q4_K", GgmlType::q4_k, {256, 2}},
      {"w.q6_K", GgmlType::q6_k, {512, 1}},
  };
  for (std::uint32_t alignment : {32u, 64u, 4u}) {
    INFO("alignment " << alignment);
    GgufWriter w(alignment);
    w.add_string("general.architecture", "llama");
    std::vector<std::vector<std::byte>> data;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      std::uint64_t n = 1;
      for (auto d : c.dims) n *= d;
      data.push_back(
          pattern(n / ggml_block_elems(c.type) * ggml_block_bytes(c.type), static_cast<unsigned>(i)));
      w.add_tensor(c.name, c.type, c.dims, data.back());
    }
    const std::vector<std::byte> bytes = w.bytes();
    const TempFile file("gguf_tensors", bytes);
    const auto f = GgufFile::open(file.path());
    CHECK(f->alignment() == alignment);
    CHECK(f->get_uint("general.alignment") ==
          (alignment == 32 ? std::nullopt : std::optional<std::uint64_t>(alignment)));
    CHECK(f->data_offset() % alignment == 0);
    CHECK(f->file_size() == bytes.size());
    REQUIRE(f->tensors().size() == cases.size());
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const GgufTensor& t = f->tensors()[i];
      CHECK(t.name == cases[i].name);
      CHECK(t.type == cases[i].type);
      CHECK(t.dims == cases[i].dims);
      CHECK(t.offset % alignment == 0);
      CHECK(std::equal(t.data.begin(), t.data.end(), data[i].begin(), data[i].end()));
      const WeightMatrix m = t.matrix();
      CHECK(m.cols == cases[i].dims[0]);
      CHECK(std::uint64_t{m.rows} * m.cols == t.n_elements());
      CHECK(m.data == t.data.data());
      CHECK(m.bytes() == t.data.size());
    }
  }
}

TEST_CASE("gguf: write() produces exactly bytes(), atomically replacing the file") {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  const std::vector<float> v = {1, 2, 3, 4};
  w.add_tensor_f32("a", std::vector<std::uint64_t>{4}, v);
  const TempFile file("gguf_write", std::vector<std::byte>(10, std::byte{1}));
  w.write(file.path());
  CHECK(read_bytes(file.path()) == w.bytes());
  const auto f = GgufFile::open(file.path());
  CHECK(f->find_tensor("a")->data.size() == 16);
  // No temporary left beside it.
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(file.path().parent_path())) {
    n += e.path().filename().string().starts_with(file.path().filename().string() + ".tmp") ? 1 : 0;
  }
  CHECK(n == 0);
  CHECK_THROWS_AS(w.write(file.path().parent_path() / "no_such_dir" / "x.gguf"), Error);
}

TEST_CASE("gguf: the writer refuses what it cannot write faithfully") {
  GgufWriter w;
  w.add_u32("k", 1);
  CHECK_THROWS_AS(w.add_string("k", "again"), InvalidArgument);
  CHECK_THROWS_AS(w.add_u8("", 1), InvalidArgument);
  CHECK_THROWS_AS(GgufWriter(48), InvalidArgument);
  CHECK_THROWS_AS(GgufWriter(0), InvalidArgument);
  const std::vector<std::byte> b34(34);
  const std::vector<std::uint64_t> d32 = {32}, d33 = {33}, d0 = {0}, d5 = {32, 1, 1, 1, 1};
  w.add_tensor("q", GgmlType::q8_0, d32, b34);
  CHECK_THROWS_AS(w.add_tensor("q", GgmlType::q8_0, d32, b34), InvalidArgument);
  CHECK_THROWS_AS(w.add_tensor("r", GgmlType::q8_0, d33, b34), InvalidArgument);
  CHECK_THROWS_AS(w.add_tensor("r", GgmlType::q8_0, d0, b34), InvalidArgument);
  CHECK_THROWS_AS(w.add_tensor("r", GgmlType::q8_0, d5, b34), InvalidArgument);
  CHECK_THROWS_AS(w.add_tensor("r", GgmlType::q8_0, d32, std::span(b34).first(33)), InvalidArgument);
  CHECK_THROWS_AS(w.add_tensor("", GgmlType::q8_0, d32, b34), InvalidArgument);
  CHECK_THROWS_AS(w.add_tensor(std::string(64, 'n'), GgmlType::q8_0, d32, b34), InvalidArgument);
  w.add_tensor(std::string(63, 'n'), GgmlType::q8_0, d32, b34);
  // The failed calls changed nothing.
  const TempFile file("gguf_refused", w.bytes());
  const auto f = GgufFile::open(file.path());
  CHECK(f->keys().size() == 1);
  CHECK(f->tensors().size() == 2);
}

TEST_CASE("gguf: a missing file is an Error naming it") {
  const auto p = std::filesystem::temp_directory_path() / "kvcache_llama_no_such_file.gguf";
  try {
    (void)GgufFile::open(p);
    FAIL("opened a missing file");
  } catch (const FormatError&) {
    FAIL("a missing file is not a format error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), p.string()));
    CHECK(contains(e.what(), "not found"));
  }
  CHECK_THROWS_AS((void)GgufFile::open(std::filesystem::temp_directory_path()), Error);
  // A FIFO is refused at once (opening it must not wait for a writer).
  const TempFile placeholder("gguf_fifo", {});
  std::filesystem::remove(placeholder.path());
  REQUIRE(::mkfifo(placeholder.path().c_str(), 0600) == 0);
  try {
    (void)GgufFile::open(placeholder.path());
    FAIL("opened a FIFO");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "not a regular file"));
  }
}

}  // namespace kvcache::llama::test
