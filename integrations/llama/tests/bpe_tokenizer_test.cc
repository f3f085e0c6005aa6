// BpeTokenizer on hand-made vocabularies: GPT-2's byte map, merge ranks worked out by hand, a
// naive oracle (lowest rank first, rescanning after each merge), ignore_merges, lossless bytes.
#include "llama/bpe_tokenizer.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvcache/error.h"
#include "vocab_fixtures.h"

namespace kvcache::llama::test {
namespace {

using Ids = std::vector<std::int32_t>;

// Ranks 0..: Ġt, he, Ġthe, bc, ab, aa, aaa, Ġa  (ids 256..263)
const std::vector<std::string> kMerges = {"\xC4\xA0 t", "h e", "\xC4\xA0t he", "b c",
                                          "a b",        "a a", "aa a",         "\xC4\xA0 a"};

// BPE written the slow way over one word: byte symbols, then repeatedly merge the leftmost pair
// with the lowest rank.
Ids naive_bpe(const GgufVocab& v, const std::string& word) {
  std::unordered_map<std::string, std::int32_t> id;
  for (std::size_t i = 0; i < v.tokens.size(); ++i) id.emplace(v.tokens[i], static_cast<std::int32_t>(i));
  std::unordered_map<std::string, std::size_t> rank;
  for (std::size_t r = 0; r < v.merges.size(); ++r) rank.emplace(v.merges[r], r);
  std::vector<std::string> sym;
  for (char c : word) sym.push_back(gpt2_chars(std::string(1, c)));
  for (;;) {
    std::int64_t best = -1;
    std::size_t best_rank = 0;
    for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto it = rank.find(sym[i] + " " + sym[i + 1]);
      if (it != rank.end() && (best < 0 || it->second < best_rank))
        best = static_cast<std::int64_t>(i), best_rank = it->second;
    }
    if (best < 0) break;
    sym[static_cast<std::size_t>(best)] += sym[static_cast<std::size_t>(best) + 1];
    sym.erase(sym.begin() + best + 1);
  }
  Ids out;
  for (const std::string& s : sym) out.push_back(id.at(s));
  return out;
}

}  // namespace

TEST_CASE("bpe: GPT-2's byte-to-unicode map") {
  CHECK(gpt2_byte_to_unicode('a') == U'a');
  CHECK(gpt2_byte_to_unicode('!') == U'!');
  CHECK(gpt2_byte_to_unicode('~') == U'~');
  CHECK(gpt2_byte_to_unicode(0xA1) == U'\u00A1');
  CHECK(gpt2_byte_to_unicode(0xFF) == U'\u00FF');
  // The 68 unprintable bytes count up from U+0100: 0x00..0x20 (33), 0x7F..0xA0 (34), 0xAD.
  CHECK(gpt2_byte_to_unicode(0x00) == U'\u0100');
  CHECK(gpt2_byte_to_unicode(' ') == U'\u0120');   // "Ġ"
  CHECK(gpt2_byte_to_unicode('\n') == U'\u010A');  // "Ċ"
  CHECK(gpt2_byte_to_unicode(0x7F) == U'\u0121');
  CHECK(gpt2_byte_to_unicode(0xA0) == U'\u0142');
  CHECK(gpt2_byte_to_unicode(0xAD) == U'\u0143');
}

TEST_CASE("bpe: the lowest merge rank goes first, leftmost on ties") {
  const auto t = make(bpe_vocab(kMerges));
  CHECK(t->encode(" the", false, false, false) == Ids{258});      // Ġ t -> Ġt, h e -> he, Ġt he
  CHECK(t->encode("abc", false, false, false) == Ids{'a', 259});  // b c (rank 3) before a b (4)
  CHECK(t->encode("ab", false, false, false) == Ids{260});
  CHECK(t->encode("aaa", false, false, false) == Ids{262});        // (aa) a, then aa a
  CHECK(t->encode("aaaa", false, false, false) == Ids{261, 261});  // aa aa has no rank
  // The pre-tokenizer's words never merge across: "a the" is "a", " the".
  CHECK(t->encode("a the", false, false, false) == Ids{'a', 258});
  CHECK(t->encode("", false, false, false).empty());
  CHECK(t->encode("", true, true, false) == Ids{11, 11});  // llama.cpp's gpt2 default BOS = EOS = 11
}

TEST_CASE("bpe: equals the naive merge loop on random words") {
  const auto v = bpe_vocab(kMerges);
  const auto t = make(v);
  std::mt19937 rng(11);
  const std::string alphabet = "abcthe";
  for (int n = 0; n < 300; ++n) {
    std::string w;
    const auto len = std::uniform_int_distribution<int>(1, 20)(rng);
    for (int i = 0; i < len; ++i)
      w += alphabet[std::uniform_int_distribution<std::size_t>(0, alphabet.size() - 1)(rng)];
    CAPTURE(w);
    CHECK(t->encode(w, false, false, false) == naive_bpe(v, w));
    CHECK(t->encode(" " + w, false, false, false) == naive_bpe(v, " " + w));
  }
}

TEST_CASE("bpe: any bytes round-trip, invalid UTF-8 included") {
  const auto t = make(bpe_vocab(kMerges));
  std::mt19937 rng(3);
  for (int n = 0; n < 200; ++n) {
    std::string s;
    const auto len = std::uniform_int_distribution<int>(0, 40)(rng);
    for (int i = 0; i < len; ++i) s += static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
    CAPTURE(s);
    CHECK(decode_all(*t, t->encode(s, false, false, false)) == s);
  }
  CHECK(t->decode(-1, ' ') == " ");  // no space prefix to drop in byte-level BPE
  CHECK(t->decode(-1, 0xE2) == "\xE2");
}

TEST_CASE("bpe: ignore_merges (llama3) emits a word that is a token whole") {
  const auto extra = std::vector<std::string>{"xyz"};
  const auto plain = make(bpe_vocab(kMerges, "gpt-2", extra));
  const auto llama3 = make(bpe_vocab(kMerges, "llama3", extra));
  CHECK(plain->encode("xyz", false, false, false) == Ids{'x', 'y', 'z'});
  CHECK(llama3->encode("xyz", false, false, false) == Ids{264});
  CHECK(llama3->encode("abc", false, false, false) == Ids{'a', 259});  // not a token: merged as usual
  CHECK(llama3->pre() == "llama3");
  CHECK(llama3->model() == "gpt2");
}

TEST_CASE("bpe: a byte without a token is dropped, as llama.cpp does") {
  auto v = bpe_vocab(kMerges);
  v.tokens[3] = "[unused 3]";
  const auto t = make(v);
  CHECK(t->encode("a\x03"
                  "b",
                  false, false, false) == Ids{'a', 'b'});
}

TEST_CASE("bpe: special tokens, BOS/EOS defaults and decode of each kind") {
  auto v = bpe_vocab(kMerges, "llama3", {"<|begin|>", "<|end|>", "<tool>"});
  v.token_types.assign(v.tokens.size(), static_cast<std::int32_t>(TokenKind::normal));
  v.token_types[264] = v.token_types[265] = static_cast<std::int32_t>(TokenKind::control);
  v.token_types[266] = static_cast<std::int32_t>(TokenKind::user_defined);
  v.bos_id = 264;
  v.eos_id = 265;
  const auto t = make(v);
  CHECK(t->add_bos_default());  // llama3 family, no add_bos_token key
  CHECK(t->encode("ab", true, true, false) == Ids{264, 260, 265});
  CHECK(t->encode("<|end|>", false, false, true) == Ids{265});
  CHECK(t->encode("ab<tool>ab", false, false, false) == Ids{260, 266, 260});
  CHECK(t->decode(-1, 265).empty());
  CHECK(t->piece(265) == "<|end|>");
  CHECK(t->decode(-1, 266) == "<tool>");
  CHECK(t->decode(-1, 258) == " the");
  v.add_bos = false;
  CHECK_FALSE(make(v)->add_bos_default());
}

}  // namespace kvcache::llama::test
