// BpePreTokenizer: each supported expression list on strings whose split is worked out by hand,
// and the invariant that the words concatenate to the input for any bytes.
#include "llama/bpe_pretokenizer.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace kvcache::llama::test {
namespace {

using Words = std::vector<std::string_view>;

Words split(std::string_view pre, std::string_view text) {
  const auto p = BpePreTokenizer::create(pre);
  REQUIRE(p != nullptr);
  return p->split(text);
}

}  // namespace

TEST_CASE("pre-tokenizer gpt-2: contractions, letters, digits, symbols, whitespace runs") {
  CHECK(split("gpt-2", "Hello world  foo's 123!!") ==
        Words{"Hello", " world", " ", " foo", "'s", " 123", "!!"});
  CHECK(split("gpt-2", "a  \n") == Words{"a", "  \n"});  // trailing whitespace stays one run
  CHECK(split("gpt-2", "\xD0\xBD\xD0\xB5 \xE4\xB8\xAD") ==
        Words{"\xD0\xBD\xD0\xB5", " \xE4\xB8\xAD"});  // Unicode letters
  CHECK(split("gpt-2", "").empty());
}

TEST_CASE("pre-tokenizer llama3: up to three digits, newline runs, case-insensitive contractions") {
  CHECK(split("llama3", "Hello 12345\n\nworld") == Words{"Hello", " ", "123", "45", "\n\n", "world"});
  CHECK(split("llama3", "I'VE") == Words{"I", "'VE"});
  CHECK(split("llama3", "(x") == Words{"(x"});  // one leading non-letter joins the letters
}

TEST_CASE("pre-tokenizer qwen2: single digits") {
  CHECK(split("qwen2", "x 123") == Words{"x", " ", "1", "2", "3"});
}

TEST_CASE("pre-tokenizer starcoder and smollm: digits first, then GPT-2") {
  CHECK(split("starcoder", "a12 b") == Words{"a", "1", "2", " b"});
  CHECK(split("smollm", "a12 b") == Words{"a", "1", "2", " b"});
}

TEST_CASE("pre-tokenizer falcon: punctuation runs, GPT-2, then groups of three digits") {
  CHECK(split("falcon", "x+=1000") == Words{"x", "+=", "100", "0"});
}

TEST_CASE("pre-tokenizer deepseek-coder: newlines, letter and punctuation runs, single digits") {
  CHECK(split("deepseek-coder", "ab\n cd.. 42") == Words{"ab", "\n", " cd", "..", " ", "4", "2"});
}

TEST_CASE("pre-tokenizer default: llama.cpp's list for files without a pre-tokenizer") {
  CHECK(split("default", "a+b 12345") == Words{"a", "+", "b", " ", "123", "45"});
  CHECK(split("default", "a, b") == Words{"a", ",", " b"});
}

TEST_CASE("pre-tokenizer: the words of any bytes concatenate to the input") {
  std::mt19937 rng(5);
  for (const char* name :
       {"default", "llama3", "qwen2", "smollm", "gpt-2", "starcoder", "falcon", "deepseek-coder"}) {
    const auto p = BpePreTokenizer::create(name);
    REQUIRE(p != nullptr);
    for (int n = 0; n < 100; ++n) {
      std::string s;
      const auto len = std::uniform_int_distribution<int>(0, 30)(rng);
      for (int i = 0; i < len; ++i) s += static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      std::string joined;
      for (std::string_view w : p->split(s)) {
        CHECK_FALSE(w.empty());
        joined += w;
      }
      CAPTURE(name);
      CHECK(joined == s);
    }
  }
}

TEST_CASE("pre-tokenizer: unknown names are refused, the supported ones listed") {
  CHECK(BpePreTokenizer::create("tekken") == nullptr);
  CHECK(BpePreTokenizer::create("") == nullptr);
  const std::string names = BpePreTokenizer::supported_names();
  for (const char* n :
       {"default", "llama3", "qwen2", "smollm", "gpt-2", "starcoder", "falcon", "deepseek-coder"})
    CHECK(names.find(n) != std::string::npos);
}

}  // namespace kvcache::llama::test
