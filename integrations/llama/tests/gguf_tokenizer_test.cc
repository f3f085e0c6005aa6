// load_gguf_tokenizer on real files: the shared vocabularies' test vectors (ids from the models'
// Hugging Face tokenizers, as llama.cpp's test-tokenizer-0 checks them), stories260K.gguf's
// tokenizer against the llama2.c tokenizer on the whole sample, and special-token parsing.
#include "llama/gguf_tokenizer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "contains.h"
#include "llama/gguf_file.h"
#include "llama/gguf_vocab.h"
#include "llama/gguf_writer.h"
#include "llama/tokenizer.h"
#include "temp_file.h"
#include "vocab_fixtures.h"

namespace kvcache::llama::test {
namespace {

using Ids = std::vector<std::int32_t>;

std::unique_ptr<TextTokenizer> load(const std::filesystem::path& p) {
  return load_gguf_tokenizer(*GgufFile::open(p));
}

std::filesystem::path vocab_path(const std::string& name) {
  return shared_dir() / "data" / "tokenizers" / ("ggml-vocab-" + name + ".gguf");
}

// Every string of <file>.inp (each followed by "\n__ggml_vocab_test__\n") and the ids on the
// matching line of <file>.out.
struct Vectors {
  std::vector<std::string> texts;
  std::vector<Ids> ids;
};

Vectors read_vectors(const std::string& name) {
  const std::string inp = read_text(vocab_path(name).string() + ".inp");
  const std::string out = read_text(vocab_path(name).string() + ".out");
  Vectors v;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (std::size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos; pos = next + sep.size())
    v.texts.push_back(inp.substr(pos, next - pos));
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream nums(line);
    Ids ids;
    for (std::int32_t id; nums >> id;) ids.push_back(id);
    v.ids.push_back(ids);
  }
  return v;
}

// All vectors of one file: ids without BOS/EOS or special parsing, and decode back to the text.
void check_vectors(const std::string& name) {
  const auto t = load(vocab_path(name));
  const Vectors v = read_vectors(name);
  REQUIRE(v.texts.size() == 46);
  REQUIRE(v.ids.size() == v.texts.size());
  std::size_t same_ids = 0, round_trips = 0;
  for (std::size_t i = 0; i < v.texts.size(); ++i) {
    CAPTURE(i);
    CAPTURE(v.texts[i]);
    const Ids ids = t->encode(v.texts[i], false, false, false);
    CHECK(ids == v.ids[i]);
    same_ids += ids == v.ids[i];
    const std::string back = decode_all(*t, ids);
    CHECK(back == v.texts[i]);
    round_trips += back == v.texts[i];
  }
  MESSAGE(name << ": " << same_ids << "/" << v.texts.size() << " ids, " << round_trips << " round trips");
}

}  // namespace

TEST_CASE("gguf tokenizer: llama-spm test vectors") { check_vectors("llama-spm"); }
TEST_CASE("gguf tokenizer: gpt-2 test vectors") { check_vectors("gpt-2"); }
TEST_CASE("gguf tokenizer: starcoder test vectors") { check_vectors("starcoder"); }
TEST_CASE("gguf tokenizer: falcon test vectors") { check_vectors("falcon"); }
TEST_CASE("gguf tokenizer: deepseek-coder test vectors") { check_vectors("deepseek-coder"); }

TEST_CASE("gguf tokenizer: the metadata picks model, pre-tokenizer and special ids") {
  const auto spm = load(vocab_path("llama-spm"));
  CHECK(spm->model() == "llama");
  CHECK(spm->vocab_size() == 32000);
  CHECK(spm->bos() == 1);
  CHECK(spm->eos() == 2);
  CHECK(spm->add_bos_default());
  const auto ds = load(vocab_path("deepseek-coder"));
  CHECK(ds->model() == "gpt2");
  CHECK(ds->pre() == "deepseek-coder");
  CHECK(ds->bos() == 32013);
  CHECK(ds->eos() == 32014);
  CHECK(ds->add_bos_default());  // tokenizer.ggml.add_bos_token
  const auto falcon = load(vocab_path("falcon"));
  CHECK(falcon->bos() == 11);
  CHECK_FALSE(falcon->add_bos_default());
  CHECK(falcon->is_control(11));
}

TEST_CASE("gguf tokenizer: special tokens are one token only when parsed") {
  const auto sc = load(vocab_path("starcoder"));
  const Ids parsed = sc->encode("<fim_prefix>def f", false, false, true);
  REQUIRE_FALSE(parsed.empty());
  CHECK(parsed.front() == 1);  // <fim_prefix>
  CHECK(sc->encode("def f", false, false, false) == Ids(parsed.begin() + 1, parsed.end()));
  const Ids plain = sc->encode("<fim_prefix>def f", false, false, false);
  CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
  CHECK(decode_all(*sc, plain) == "<fim_prefix>def f");

  const auto spm = load(vocab_path("llama-spm"));
  // The text after a special token gets its own space prefix, as at the start.
  Ids want = {1, 1};
  for (std::int32_t id : spm->encode("Hi", false, false, false)) want.push_back(id);
  want.push_back(2);
  CHECK(spm->encode("<s>Hi</s>", true, false, true) == want);
}

TEST_CASE("gguf tokenizer: stories260K.gguf encodes the whole sample like tok512.bin") {
  const auto gguf = load(shared_dir() / "models" / "stories260K.gguf");
  const Tokenizer ref = Tokenizer::load(tokenizer_path(), 512);
  const std::string sample = read_text(sample_text_path());
  CHECK(gguf->vocab_size() == 512);
  CHECK(gguf->bos() == Tokenizer::kBos);
  CHECK(gguf->eos() == Tokenizer::kEos);
  const Ids a = gguf->encode(sample, true, false, false);
  const Ids b = ref.encode(sample, true, false);
  CHECK(a.size() == b.size());
  CHECK(a == b);
  std::string da, db;
  for (std::size_t i = 1; i < a.size(); ++i) {
    da += gguf->decode(a[i - 1], a[i]);
    db += ref.decode(b[i - 1], b[i]);
  }
  CHECK(da == db);
  CHECK(da == sample);
  MESSAGE("sample: " << sample.size() << " bytes, " << a.size() << " tokens");
}

namespace {

// A vocabulary-only GGUF file holding `v` the way llama.cpp's converters write it.
GgufWriter vocab_writer(const GgufVocab& v) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("tokenizer.ggml.model", v.model);
  if (v.pre) w.add_string("tokenizer.ggml.pre", *v.pre);
  w.add_string_array("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) w.add_f32_array("tokenizer.ggml.scores", v.scores);
  if (!v.token_types.empty()) w.add_i32_array("tokenizer.ggml.token_type", v.token_types);
  if (!v.merges.empty()) w.add_string_array("tokenizer.ggml.merges", v.merges);
  if (v.bos_id) w.add_u32("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(*v.bos_id));
  if (v.eos_id) w.add_u32("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(*v.eos_id));
  if (v.add_bos) w.add_bool("tokenizer.ggml.add_bos_token", *v.add_bos);
  if (v.add_space_prefix) w.add_bool("tokenizer.ggml.add_space_prefix", *v.add_space_prefix);
  return w;
}

// The FormatError message of loading `w`'s file (which it must name).
std::string load_error(const GgufWriter& w) {
  const TempFile f("gguf_tok", w.bytes());
  return format_error_of(f, [&] { load(f.path()); });
}

}  // namespace

TEST_CASE("gguf tokenizer: every key is read from the file") {
  GgufVocab v = spm_vocab({{"\xE2\x96\x81", -1},
                           {"a", -2},
                           {"\xE2\x96\x81"
                            "a",
                            -3}});
  v.bos_id = 2;
  v.eos_id = 1;
  v.add_bos = false;
  v.add_space_prefix = false;
  const TempFile f("gguf_tok_spm", vocab_writer(v).bytes());
  const auto t = load(f.path());
  CHECK(t->bos() == 2);
  CHECK(t->eos() == 1);
  CHECK_FALSE(t->add_bos_default());
  CHECK(t->encode("a a", false, false, false) == Ids{260, 261});  // no prefix: a, ▁a

  GgufVocab b = bpe_vocab({"a b"}, "qwen2");
  b.add_bos = true;
  b.bos_id = 256;
  const TempFile fb("gguf_tok_bpe", vocab_writer(b).bytes());
  const auto tb = load(fb.path());
  CHECK(tb->pre() == "qwen2");
  CHECK(tb->encode("ab", true, false, false) == Ids{256, 256});
}

TEST_CASE("gguf tokenizer: missing keys and keys of the wrong type name the key") {
  GgufWriter none;
  none.add_string("general.architecture", "llama");
  CHECK(contains(load_error(none), "tokenizer.ggml.model"));

  GgufWriter no_tokens;
  no_tokens.add_string("tokenizer.ggml.model", "llama");
  CHECK(contains(load_error(no_tokens), "tokenizer.ggml.tokens"));

  GgufWriter ints;  // tokens stored as numbers
  ints.add_string("tokenizer.ggml.model", "llama");
  const std::vector<std::int32_t> numbers = {1, 2, 3};
  ints.add_i32_array("tokenizer.ggml.tokens", numbers);
  CHECK(contains(load_error(ints), "tokenizer.ggml.tokens"));

  const GgufVocab v = spm_vocab({{"a", -1}});
  GgufVocab no_scores = v;
  no_scores.scores.clear();
  GgufWriter scores_as_ints = vocab_writer(no_scores);
  const std::vector<std::int32_t> int_scores(v.tokens.size(), 0);
  scores_as_ints.add_i32_array("tokenizer.ggml.scores", int_scores);
  CHECK(contains(load_error(scores_as_ints), "tokenizer.ggml.scores"));

  GgufWriter bos_as_string = vocab_writer(v);
  bos_as_string.add_string("tokenizer.ggml.bos_token_id", "1");
  CHECK(contains(load_error(bos_as_string), "tokenizer.ggml.bos_token_id"));

  GgufVocab bad_type = v;
  bad_type.token_types[7] = 42;
  CHECK(contains(load_error(vocab_writer(bad_type)), "tokenizer.ggml.token_type"));

  GgufVocab unknown = bpe_vocab({"a b"}, "tekken");
  CHECK(contains(load_error(vocab_writer(unknown)), "'tekken' is not a supported pre-tokenizer"));
}

}  // namespace kvcache::llama::test
