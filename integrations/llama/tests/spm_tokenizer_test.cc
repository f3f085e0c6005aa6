// SpmTokenizer on hand-made vocabularies: merge order worked out by hand, a naive oracle (rescan
// every pair after each merge), byte fallback, the space prefix, decode and special tokens.
#include "llama/spm_tokenizer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvcache/error.h"
#include "vocab_fixtures.h"

namespace kvcache::llama::test {
namespace {

using Ids = std::vector<std::int32_t>;
constexpr std::int32_t kPiece = 259;  // id of the first hand-made piece
constexpr std::int32_t byte_id(unsigned char b) { return 3 + b; }

// "▁" 259, a 260, b 261, c 262, ab 263, bc 264, ▁a 265, abc 266, aa 267, é 268 (scores below).
GgufVocab abc_vocab() {
  return spm_vocab({{"\xE2\x96\x81", -1},
                    {"a", -2},
                    {"b", -3},
                    {"c", -4},
                    {"ab", -5},
                    {"bc", -0.5f},
                    {"\xE2\x96\x81"
                     "a",
                     -6},
                    {"abc", -7},
                    {"aa", -1},
                    {"\xC3\xA9", -9}});
}

// llama.cpp's SPM algorithm written the slow way: characters, then repeatedly merge the leftmost
// pair with the highest score whose concatenation is a token, then tokens or byte fallback.
Ids naive_spm(const GgufVocab& v, std::string text, bool prefix) {
  std::unordered_map<std::string, std::int32_t> id;
  for (std::size_t i = 0; i < v.tokens.size(); ++i) id.emplace(v.tokens[i], static_cast<std::int32_t>(i));
  if (prefix) text = " " + text;
  std::string escaped;
  for (char c : text) escaped += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
  std::vector<std::string> sym;
  for (std::size_t i = 0; i < escaped.size();) {
    const auto lead = static_cast<unsigned char>(escaped[i]);
    std::size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    len = std::min(len, escaped.size() - i);
    sym.push_back(escaped.substr(i, len));
    i += len;
  }
  for (;;) {
    std::int64_t best = -1;
    float best_score = 0;
    for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto it = id.find(sym[i] + sym[i + 1]);
      if (it == id.end()) continue;
      const float s = v.scores[static_cast<std::size_t>(it->second)];
      if (best < 0 || s > best_score) best = static_cast<std::int64_t>(i), best_score = s;
    }
    if (best < 0) break;
    sym[static_cast<std::size_t>(best)] += sym[static_cast<std::size_t>(best) + 1];
    sym.erase(sym.begin() + best + 1);
  }
  Ids out;
  for (const std::string& s : sym) {
    const auto it = id.find(s);
    if (it != id.end()) {
      out.push_back(it->second);
    } else {
      for (char c : s) out.push_back(byte_id(static_cast<unsigned char>(c)));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("spm: the highest-scoring pair merges first, leftmost on ties") {
  const auto t = make(abc_vocab());
  // "▁abc": bc (-0.5) beats ab (-5) and ▁a (-6); then ▁a beats abc (-7): [▁a, bc].
  CHECK(t->encode("abc", false, false, false) == Ids{kPiece + 6, kPiece + 5});
  // "▁aaa": the two "aa" pairs tie at -1 and beat ▁a; the left one wins: [▁, aa, a].
  CHECK(t->encode("aaa", false, false, false) == Ids{kPiece, kPiece + 8, kPiece + 1});
  // Spaces become ▁ and merge like any character: "a b" -> "▁a▁b".
  CHECK(t->encode("a b", false, false, false) == Ids{kPiece + 6, kPiece, kPiece + 2});
}

TEST_CASE("spm: characters outside the vocabulary fall back to byte tokens") {
  const auto t = make(abc_vocab());
  CHECK(t->encode("\xC3\xA9", false, false, false) == Ids{kPiece, kPiece + 9});  // é is a piece
  CHECK(t->encode("\xC3\xB6", false, false, false) == Ids{kPiece, byte_id(0xC3), byte_id(0xB6)});
  CHECK(t->encode("\n", false, false, false) == Ids{kPiece, byte_id('\n')});
  // A stray continuation byte and a truncated sequence are characters of their own.
  CHECK(t->encode("\x80"
                  "a\xE2",
                  false, false, false) == Ids{kPiece, byte_id(0x80), kPiece + 1, byte_id(0xE2)});
}

TEST_CASE("spm: BOS, EOS and the space prefix") {
  auto v = abc_vocab();
  const auto t = make(v);
  CHECK(t->bos() == 1);
  CHECK(t->eos() == 2);
  CHECK(t->add_bos_default());
  CHECK(t->encode("", true, true, false) == Ids{1, 2});
  CHECK(t->encode("", false, false, false).empty());
  CHECK(t->encode("a", true, true, false) == Ids{1, kPiece + 6, 2});
  v.add_space_prefix = false;
  const auto bare = make(v);
  CHECK(bare->encode("abc", false, false, false) == Ids{kPiece + 7});  // a, bc -> abc
  CHECK(decode_all(*bare, bare->encode(" abc", false, false, false)) == " abc");
}

TEST_CASE("spm: equals the naive merge loop on random texts") {
  const auto v = abc_vocab();
  const auto t = make(v);
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {"a", "b", "c", " ", "\xC3\xA9", "\xC3\xB6", "\n", "d"};
  for (int n = 0; n < 300; ++n) {
    std::string s;
    const auto len = std::uniform_int_distribution<int>(0, 24)(rng);
    for (int i = 0; i < len; ++i)
      s += alphabet[std::uniform_int_distribution<std::size_t>(0, alphabet.size() - 1)(rng)];
    CAPTURE(s);
    CHECK(t->encode(s, false, false, false) == (s.empty() ? Ids{} : naive_spm(v, s, true)));
    CHECK(decode_all(*t, t->encode(s, true, false, false)) == s);
  }
}

TEST_CASE("spm: decode prints spaces and bytes, hides control tokens, drops the prefix space") {
  const auto t = make(abc_vocab());
  CHECK(t->decode(-1, kPiece + 6) == "a");           // start of text: prefix dropped
  CHECK(t->decode(1, kPiece + 6) == "a");            // after BOS
  CHECK(t->decode(kPiece + 1, kPiece + 6) == " a");  // mid-text: a real space
  CHECK(t->decode(kPiece, byte_id('A')) == "A");
  CHECK(t->decode(kPiece, byte_id(0xC3)) == "\xC3");  // half a character, written through
  CHECK(t->decode(kPiece, 1).empty());
  CHECK(t->decode(kPiece, 0).empty());
  CHECK(t->piece(kPiece + 6) ==
        "\xE2\x96\x81"
        "a");
  CHECK(t->kind(0) == TokenKind::unknown);
  CHECK(t->is_control(2));
  CHECK(t->kind(3) == TokenKind::byte);
  CHECK(t->model() == "llama");
  CHECK(t->pre().empty());
  CHECK_THROWS_AS(t->decode(0, 269), InvalidArgument);
  CHECK_THROWS_AS(t->piece(-1), InvalidArgument);
}

TEST_CASE("spm: special tokens are cut out of the text only when parsed, user-defined always") {
  auto v = abc_vocab();
  v.tokens.push_back("<tool>");
  v.scores.push_back(0);
  v.token_types.push_back(static_cast<std::int32_t>(TokenKind::user_defined));
  const std::int32_t tool = static_cast<std::int32_t>(v.tokens.size()) - 1;
  const auto t = make(v);
  // With parse_special, "<s>" is BOS and the text after it gets its own space prefix.
  CHECK(t->encode("a<s>a", false, false, true) == Ids{kPiece + 6, 1, kPiece + 6});
  const Ids plain = t->encode("a<s>a", false, false, false);
  CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
  CHECK(decode_all(*t, plain) == "a<s>a");
  // A user-defined token is cut out either way.
  CHECK(t->encode("a<tool>a", false, false, false) == Ids{kPiece + 6, tool, kPiece + 6});
  CHECK(decode_all(*t, t->encode("a<tool>a", false, false, false)) == "a<tool>a");
  // Control tokens print nothing; the text after one lost its prefix space again.
  CHECK(decode_all(*t, t->encode("a<s>a</s>", false, false, true)) == "aa");
}

TEST_CASE("spm: the special-token partition takes longer tokens first") {
  auto v = abc_vocab();
  for (const char* s : {"<s><s>", "s>"}) {
    v.tokens.push_back(s);
    v.scores.push_back(0);
    v.token_types.push_back(static_cast<std::int32_t>(TokenKind::control));
  }
  const auto t = make(v);
  const auto& vt = dynamic_cast<const VocabTokenizer&>(*t);
  const auto frags = vt.partition("x<s><s><s>y", true);
  const std::int32_t pair = 269, tail = 270;
  REQUIRE(frags.size() == 4);
  CHECK(frags[0].text == "x");
  CHECK(frags[0].token == -1);
  CHECK(frags[1].token == pair);  // "<s><s>" before "<s>" and "s>"
  CHECK(frags[1].text == "<s><s>");
  CHECK(frags[2].token == 1);  // then "<s>" before "s>"
  CHECK(frags[3].token == -1);
  CHECK(frags[3].text == "y");
  CHECK(vt.partition("", true).empty());
  CHECK(vt.partition("s>", false).size() == 1);  // control tokens need parse_special
  CHECK(vt.partition("s>", true)[0].token == tail);
}

}  // namespace kvcache::llama::test
