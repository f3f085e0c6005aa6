// Tokenizer: llama2.c's encode (checked against a direct transcription of its quadratic loop),
// decode, round trips, and hostile tokenizer files.
#include "llama/tokenizer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "contains.h"
#include "kvcache/error.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

const Tokenizer& tok512() {
  static const Tokenizer t = Tokenizer::load(tokenizer_path(), 512);
  return t;
}

// llama2.c's encode() as written there: rescan every adjacent pair after each merge. Quadratic,
// so only for short texts; the oracle for the heap-based Tokenizer::encode.
std::vector<std::int32_t> naive_encode(const Tokenizer& t, const std::string& text) {
  std::vector<std::int32_t> toks = {Tokenizer::kBos};
  if (!text.empty()) toks.push_back(t.lookup(" "));
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 1;
    while (i + len < text.size() && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80 && len < 4)
      ++len;
    const std::int32_t id = t.lookup(text.substr(i, len));
    if (id >= 0) {
      toks.push_back(id);
    } else {
      for (std::size_t j = 0; j < len; ++j) toks.push_back(3 + static_cast<unsigned char>(text[i + j]));
    }
    i += len;
  }
  for (;;) {
    float best = -1e10f;
    std::int64_t best_i = -1;
    std::int32_t best_id = -1;
    for (std::size_t i = 0; i + 1 < toks.size(); ++i) {
      const std::int32_t id = t.lookup(std::string(t.piece(toks[i])) + std::string(t.piece(toks[i + 1])));
      if (id >= 0 && t.score(id) > best)
        best = t.score(id), best_i = static_cast<std::int64_t>(i), best_id = id;
    }
    if (best_i < 0) break;
    toks[static_cast<std::size_t>(best_i)] = best_id;
    toks.erase(toks.begin() + best_i + 1);
  }
  return toks;
}

std::string decode_all(const Tokenizer& t, const std::vector<std::int32_t>& toks) {
  std::string s;
  for (std::size_t i = 1; i < toks.size(); ++i) s += t.decode(toks[i - 1], toks[i]);
  return s;
}

std::string tokenizer_error(const std::vector<std::byte>& bytes, std::uint32_t vocab = 512) {
  TempFile f("tok", bytes);
  return format_error_of(f, [&] { Tokenizer::load(f.path(), vocab); });
}

// Byte offset of token i's score field in tok512.bin.
std::size_t token_offset(const std::vector<std::byte>& b, int i) {
  std::size_t off = 4;
  for (int k = 0; k < i; ++k) {
    std::int32_t len;
    std::memcpy(&len, b.data() + off + 4, 4);
    off += 8 + static_cast<std::size_t>(len);
  }
  return off;
}

}  // namespace

TEST_CASE("tokenizer: known encodings match llama2.c") {
  const Tokenizer& t = tok512();
  // Expected ids from a transcription of llama2.c's encode() over tok512.bin.
  CHECK(t.encode("Once upon a time", true, false) == std::vector<std::int32_t>{1, 403, 407, 261, 378});
  CHECK(t.encode("Lily's cat, Tom.", true, false) ==
        std::vector<std::int32_t>{1, 317, 439, 419, 280, 294, 432, 274, 287, 426});
  // Code points missing from the vocabulary fall back to their UTF-8 bytes (token 3 + byte).
  CHECK(t.encode("h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80", true, false) ==
        std::vector<std::int32_t>{1, 270, 485, 306, 414, 410, 229, 155, 134, 410, 243, 162, 155, 131});
  CHECK(t.encode("a\nb", true, false) == std::vector<std::int32_t>{1, 261, 13, 430});
  CHECK(t.encode("", true, false) == std::vector<std::int32_t>{1});
  CHECK(t.encode("", false, true) == std::vector<std::int32_t>{2});
  CHECK(t.encode("a", false, true) == std::vector<std::int32_t>{261, 2});
}

TEST_CASE("tokenizer: heap merging equals llama2.c's rescanning loop") {
  const Tokenizer& t = tok512();
  const std::string sample = read_text(sample_text_path());
  std::vector<std::string> texts = {" leading space",
                                    "  two",
                                    "tab\there",
                                    "\xff\xfe bad utf8 \x80\x80\x80\x80\x80",
                                    "\xe2\x80\x8a thin space",
                                    "aaaaaaaaaaaaaaaaaaaaaaaaa",
                                    "!!!???...,,,"};
  for (std::size_t start = 0; start < 6000; start += 1500) texts.push_back(sample.substr(start, 400));
  for (const std::string& s : texts) {
    CAPTURE(s);
    CHECK(t.encode(s, true, false) == naive_encode(t, s));
  }
}

TEST_CASE("tokenizer: decode(encode(text)) reproduces the text") {
  const Tokenizer& t = tok512();
  const std::string sample = read_text(sample_text_path());
  for (const std::string& s :
       {std::string("Once upon a time, there was a little girl named Lily."),
        std::string(" leading space and trailing  "), std::string("line\n\nbreaks\n"),
        std::string("caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87"),
        sample.substr(0, 20000)}) {
    CHECK(decode_all(t, t.encode(s, true, false)) == s);
  }
  // The whole sample in one call: fast (not quadratic) and still exact.
  CHECK(decode_all(t, t.encode(sample, true, false)) == sample);
}

TEST_CASE("tokenizer: decode details") {
  const Tokenizer& t = tok512();
  CHECK(t.decode(0, 3 + '\n') == "\n");             // byte token
  CHECK(t.decode(0, 3 + 0xE2) == "\xE2");           // raw byte, even when not valid UTF-8 alone
  CHECK(t.decode(Tokenizer::kBos, 403) == "Once");  // leading space dropped after BOS
  CHECK(t.decode(5, 403) == " Once");
  CHECK(t.decode(5, Tokenizer::kBos).empty());
  CHECK(t.decode(5, Tokenizer::kEos).empty());
  CHECK_THROWS_AS(t.decode(1, 512), InvalidArgument);
  CHECK_THROWS_AS(t.decode(1, -1), InvalidArgument);
}

TEST_CASE("tokenizer: truncated files name the field") {
  const auto good = read_bytes(tokenizer_path());
  const std::size_t t5 = token_offset(good, 5);
  struct Cut {
    std::size_t size;
    const char* field;
  };
  const Cut cuts[] = {
      {0, "max_token_length"},       {2, "max_token_length"},      {4, "holds only 0 tokens"},
      {6, "score of token 0"},       {10, "length of token 0"},    {t5 + 2, "score of token 5"},
      {t5 + 6, "length of token 5"}, {t5 + 9, "bytes of token 5"}, {good.size() - 1, "bytes of token 511"}};
  for (const Cut& c : cuts) {
    auto b = good;
    b.resize(c.size);
    const std::string msg = tokenizer_error(b);
    CAPTURE(msg);
    CHECK(contains(msg, c.field));
  }
}

TEST_CASE("tokenizer: garbled fields are rejected") {
  const auto good = read_bytes(tokenizer_path());
  const std::size_t t5 = token_offset(good, 5);
  for (std::int32_t v : {0, -1, std::numeric_limits<std::int32_t>::min()}) {
    auto b = good;
    put_i32(b, 0, v);
    CHECK(contains(tokenizer_error(b), "max_token_length"));
  }
  for (std::int32_t v : {-1, -1000000, std::numeric_limits<std::int32_t>::min(), 8, 1 << 30,
                         std::numeric_limits<std::int32_t>::max()}) {
    auto b = good;
    put_i32(b, t5 + 4, v);
    const std::string msg = tokenizer_error(b);
    CAPTURE(msg);
    CHECK(contains(msg, "length of token 5"));
  }
  {  // a huge max_token_length lets a huge length through the range check: then it is truncation
    auto b = good;
    put_i32(b, 0, std::numeric_limits<std::int32_t>::max());
    put_i32(b, t5 + 4, 1 << 30);
    CHECK(contains(tokenizer_error(b), "bytes of token 5"));
  }
  {
    auto b = good;
    put_f32(b, t5, std::numeric_limits<float>::infinity());
    CHECK(contains(tokenizer_error(b), "score of token 5"));
  }
  {  // byte-fallback pieces must be where encode() expects them
    auto b = good;
    const std::size_t t3 = token_offset(good, 3);
    b[t3 + 8 + 3] = std::byte{'Z'};
    CHECK(contains(tokenizer_error(b), "token 3"));
  }
}

TEST_CASE("tokenizer: vocab mismatch with the model is reported") {
  const auto good = read_bytes(tokenizer_path());
  const std::string more = tokenizer_error(good, 511);
  CHECK(contains(more, "vocab_size 511"));
  CHECK(contains(more, "do not match"));
  const std::string fewer = tokenizer_error(good, 600);
  CHECK(contains(fewer, "holds only 512 tokens"));
  CHECK(contains(fewer, "vocab_size is 600"));
  CHECK(contains(tokenizer_error(good, 100), "vocab"));
}

TEST_CASE("tokenizer: usable through TextTokenizer with the same results") {
  const Tokenizer& t = tok512();
  const TextTokenizer& tt = t;
  CHECK(tt.encode("Once upon a time", true, false, true) == t.encode("Once upon a time", true, false));
  CHECK(tt.vocab_size() == 512);
  CHECK(tt.bos() == Tokenizer::kBos);
  CHECK(tt.eos() == Tokenizer::kEos);
  CHECK(tt.add_bos_default());
  CHECK(tt.kind(0) == TokenKind::unknown);
  CHECK(tt.is_control(1));
  CHECK(tt.is_control(2));
  CHECK(tt.kind(3) == TokenKind::byte);
  CHECK(tt.kind(258) == TokenKind::byte);
  CHECK(tt.kind(259) == TokenKind::normal);
  CHECK_THROWS_AS(tt.kind(512), InvalidArgument);
  CHECK(tt.model() == "llama2.c");
  CHECK(tt.decode(-1, 403) == "Once");  // start of text: the dummy prefix's space is dropped
  CHECK(tt.piece(403) == t.piece(403));
}

}  // namespace kvcache::llama::test
