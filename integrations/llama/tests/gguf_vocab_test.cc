// make_gguf_tokenizer: defaults per model type and every metadata error, each naming the file
// and the key.
#include "llama/gguf_vocab.h"

#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "contains.h"
#include "kvcache/error.h"
#include "vocab_fixtures.h"

namespace kvcache::llama::test {
namespace {

GgufVocab small_spm() { return spm_vocab({{"\xE2\x96\x81", -1}, {"a", -2}}); }
GgufVocab small_bpe() { return bpe_vocab({"a b"}); }

// The FormatError message for `v`, which must name its file and `key`.
std::string error_of(GgufVocab v, const std::string& key) {
  const std::string file = v.file;
  try {
    make_gguf_tokenizer(std::move(v));
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find(file) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("'" + key + "'") != std::string::npos, msg);
    return msg;
  }
  FAIL("expected a FormatError about " << key);
  return {};
}

}  // namespace

TEST_CASE("gguf vocab: llama.cpp's defaults per model type") {
  const auto spm = make_gguf_tokenizer(small_spm());
  CHECK(spm->bos() == 1);
  CHECK(spm->eos() == 2);
  CHECK(spm->add_bos_default());
  CHECK(spm->vocab_size() == 261);

  const auto bpe = make_gguf_tokenizer(small_bpe());
  CHECK(bpe->bos() == 11);  // llama.cpp's gpt2 default (Falcon's <|endoftext|>)
  CHECK(bpe->eos() == 11);
  CHECK_FALSE(bpe->add_bos_default());
  CHECK(bpe->pre() == "gpt-2");

  auto v = small_bpe();
  v.pre.reset();
  CHECK(make_gguf_tokenizer(v)->pre() == "default");  // files older than the key

  v = small_spm();
  v.bos_id = 0xFFFFFFFFu;  // llama.cpp's "no token"
  v.add_bos = false;
  v.eos_id = 260;
  const auto custom = make_gguf_tokenizer(v);
  CHECK(custom->bos() == -1);
  CHECK(custom->eos() == 260);
  CHECK(custom->encode("a", true, true, false).back() == 260);
}

TEST_CASE("gguf vocab: unsupported models and pre-tokenizers say what is supported") {
  auto v = small_spm();
  v.model = "bert";
  const std::string model = error_of(v, "tokenizer.ggml.model");
  CHECK(contains(model, "'bert'"));
  CHECK(contains(model, "llama"));
  CHECK(contains(model, "gpt2"));
  v.model = "";
  CHECK(contains(error_of(v, "tokenizer.ggml.model"), "missing"));

  auto b = small_bpe();
  b.pre = "tekken";
  const std::string pre = error_of(b, "tokenizer.ggml.pre");
  for (const char* name :
       {"'tekken'", "default", "llama3", "qwen2", "smollm", "gpt-2", "starcoder", "falcon", "deepseek-coder"})
    CHECK_MESSAGE(contains(pre, name), pre);
}

TEST_CASE("gguf vocab: array lengths, types, scores and duplicates are checked") {
  auto v = small_spm();
  v.tokens.clear();
  v.scores.clear();
  v.token_types.clear();
  CHECK(contains(error_of(v, "tokenizer.ggml.tokens"), "empty"));

  v = small_spm();
  v.scores.pop_back();
  CHECK(contains(error_of(v, "tokenizer.ggml.scores"), "260 entries"));
  v = small_spm();
  v.token_types.push_back(1);
  CHECK(contains(error_of(v, "tokenizer.ggml.token_type"), "262 entries"));
  v = small_spm();
  v.token_types[200] = 7;
  CHECK(contains(error_of(v, "tokenizer.ggml.token_type"), "entry 200 = 7"));
  v = small_spm();
  v.token_types[5] = -1;
  CHECK(contains(error_of(v, "tokenizer.ggml.token_type"), "entry 5"));
  v = small_spm();
  v.scores[260] = std::nanf("");
  CHECK(contains(error_of(v, "tokenizer.ggml.scores"), "entry 260"));
  v = small_spm();
  v.tokens[260] = "<s>";
  CHECK(contains(error_of(v, "tokenizer.ggml.tokens"), "ids 1 and 260"));
}

TEST_CASE("gguf vocab: special-token ids must be in range") {
  auto v = small_spm();
  v.bos_id = 261;
  CHECK(contains(error_of(v, "tokenizer.ggml.bos_token_id"), "261"));
  v = small_spm();
  v.eos_id = 1ull << 40;
  CHECK(contains(error_of(v, "tokenizer.ggml.eos_token_id"), "outside"));
  v = small_spm();
  v.bos_id = 0xFFFFFFFFu;  // no BOS, but the default add_bos_token is true for llama
  CHECK(contains(error_of(v, "tokenizer.ggml.add_bos_token"), "no BOS"));
  auto b = small_bpe();  // 257 tokens: the default 11 is in range; a 5-token vocab has none
  b.add_bos = true;
  CHECK_NOTHROW(make_gguf_tokenizer(b));
}

TEST_CASE("gguf vocab: SentencePiece byte tokens must exist and be spelled <0xNN>") {
  auto v = small_spm();
  v.tokens[3 + 0x41] = "<0x41";  // now a BYTE token with a broken spelling
  CHECK(contains(error_of(v, "tokenizer.ggml.token_type"), "'<0x41'"));
  v = small_spm();
  v.tokens[3 + 0x41] = "A?";
  v.token_types[3 + 0x41] = 1;
  CHECK(contains(error_of(v, "tokenizer.ggml.tokens"), "byte 0x41"));
  v = small_spm();                    // the byte itself as a piece is an accepted fallback
  v.tokens[3 + 0x41].assign(1, 'A');  // not = "A": GCC 12 misreports -Wrestrict there
  v.token_types[3 + 0x41] = 1;
  CHECK(make_gguf_tokenizer(v)->encode("A", false, false, false) == std::vector<std::int32_t>{259, 3 + 0x41});
}

TEST_CASE("gguf vocab: merges must be 'left right' pairs of tokens whose concatenation is a token") {
  auto v = small_bpe();
  v.merges.clear();
  CHECK(contains(error_of(v, "tokenizer.ggml.merges"), "missing"));
  v = small_bpe();
  v.merges = {"ab"};
  CHECK(contains(error_of(v, "tokenizer.ggml.merges"), "entry 0 'ab' is not 'left right'"));
  v = small_bpe();
  v.merges = {"a b", "zz b"};
  CHECK(contains(error_of(v, "tokenizer.ggml.merges"), "'zz', which is not a token"));
  v = small_bpe();
  v.merges = {"a b", "a zz"};
  CHECK(contains(error_of(v, "tokenizer.ggml.merges"), "'zz', which is not a token"));
  v = small_bpe();
  v.merges = {"a b", "b a"};
  CHECK(contains(error_of(v, "tokenizer.ggml.merges"), "'ba' is not a token"));
  v = small_bpe();
  v.merges = {" "};
  CHECK(contains(error_of(v, "tokenizer.ggml.merges"), "not 'left right'"));
}

}  // namespace kvcache::llama::test
