#include "vocab_fixtures.h"

#include <cstdio>

#include "llama/bpe_tokenizer.h"

namespace kvcache::llama::test {
namespace {

std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else {  // the GPT-2 map stays below U+0800
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

}  // namespace

GgufVocab spm_vocab(const std::vector<std::pair<std::string, float>>& pieces) {
  GgufVocab v;
  v.file = "hand-made-spm.gguf";
  v.model = "llama";
  auto add = [&](std::string text, float score, TokenKind kind) {
    v.tokens.push_back(std::move(text));
    v.scores.push_back(score);
    v.token_types.push_back(static_cast<std::int32_t>(kind));
  };
  add("<unk>", 0, TokenKind::unknown);
  add("<s>", 0, TokenKind::control);
  add("</s>", 0, TokenKind::control);
  for (unsigned b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    add(hex, 0, TokenKind::byte);
  }
  for (const auto& [text, score] : pieces) add(text, score, TokenKind::normal);
  return v;
}

std::string gpt2_chars(const std::string& bytes) {
  std::string s;
  for (char c : bytes) s += utf8(gpt2_byte_to_unicode(static_cast<unsigned char>(c)));
  return s;
}

GgufVocab bpe_vocab(const std::vector<std::string>& merges, const std::string& pre,
                    const std::vector<std::string>& extra) {
  GgufVocab v;
  v.file = "hand-made-bpe.gguf";
  v.model = "gpt2";
  v.pre = pre;
  for (unsigned b = 0; b < 256; ++b) v.tokens.push_back(gpt2_chars(std::string(1, static_cast<char>(b))));
  for (const std::string& m : merges) {
    const std::size_t space = m.find(' ', 1);
    v.tokens.push_back(m.substr(0, space) + m.substr(space + 1));
  }
  for (const std::string& e : extra) v.tokens.push_back(e);
  v.merges = merges;
  return v;
}

std::unique_ptr<TextTokenizer> make(GgufVocab v) { return make_gguf_tokenizer(std::move(v)); }

std::string decode_all(const TextTokenizer& t, const std::vector<std::int32_t>& ids) {
  std::string s;
  std::int32_t prev = -1;
  for (std::int32_t id : ids) {
    s += t.decode(prev, id);
    prev = id;
  }
  return s;
}

}  // namespace kvcache::llama::test
