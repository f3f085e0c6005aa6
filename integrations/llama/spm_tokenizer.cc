#include "llama/spm_tokenizer.h"

#include <cstdio>
#include <queue>

#include "llama/tokenizer.h"

namespace kvcache::llama {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// Bytes of the UTF-8 character a lead byte announces (1 for ASCII and stray continuation bytes),
// as llama.cpp's unicode_len_utf8.
std::size_t utf8_len(unsigned char lead) {
  static constexpr std::size_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

}  // namespace

SpmTokenizer::SpmTokenizer(const GgufVocab& v, std::string label, SpecialIds ids)
    : VocabTokenizer(v, std::move(label), ids, ""),
      scores_(v.scores.empty() ? std::vector<float>(v.tokens.size(), 0.f) : v.scores),
      add_space_prefix_(v.add_space_prefix.value_or(true)) {
  const auto n = static_cast<std::int32_t>(vocab_size());
  std::vector<std::string> decoded(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) {
    const std::string_view p = piece(i);
    std::string& d = decoded[static_cast<std::size_t>(i)];
    switch (kind(i)) {
      case TokenKind::normal:
        for (std::size_t pos = 0; pos < p.size();) {
          if (p.substr(pos, kSpace.size()) == kSpace) {
            d += ' ';
            pos += kSpace.size();
          } else {
            d += p[pos++];
          }
        }
        break;
      case TokenKind::byte: {
        const int b = parse_byte_piece(p);
        if (b < 0) {
          fail("tokenizer.ggml.token_type", "marks token " + std::to_string(i) + " '" + std::string(p) +
                                                "' as BYTE but it is not spelled <0xNN>");
        }
        d.assign(1, static_cast<char>(b));
        break;
      }
      case TokenKind::user_defined:
        d = p;
        break;
      default:  // control, unknown, unused, undefined print nothing
        break;
    }
  }
  for (unsigned b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    std::int32_t id = find(hex);
    if (id < 0) id = find(std::string(1, static_cast<char>(b)));
    if (id < 0) {
      fail("tokenizer.ggml.tokens", "has no byte-fallback token for byte 0x" + std::string(hex).substr(3, 2) +
                                        " (neither '" + hex + "' nor the byte itself)");
    }
    byte_token_[b] = id;
  }
  set_decoded(std::move(decoded), add_space_prefix_);
}

void SpmTokenizer::encode_text(std::string_view fragment, bool after_special,
                               std::vector<std::int32_t>& out) const {
  std::string text;
  text.reserve(fragment.size() * 3 + kSpace.size());
  if (add_space_prefix_ && after_special) text += kSpace;
  for (char c : fragment) {
    if (c == ' ') {
      text += kSpace;
    } else {
      text += c;
    }
  }

  // Symbols are spans of `text` in a doubly linked list; a merge extends the left span over the
  // right one and unlinks it (n = 0).
  struct Symbol {
    std::size_t start, n;
    std::int64_t prev, next;
  };
  std::vector<Symbol> sym;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t len = std::min(utf8_len(static_cast<unsigned char>(text[pos])), text.size() - pos);
    const auto i = static_cast<std::int64_t>(sym.size());
    sym.push_back({pos, len, i - 1, pos + len == text.size() ? -1 : i + 1});
    pos += len;
  }

  // Highest score first, leftmost on ties. A pair is stale when either side changed since it was
  // queued: then the sides' lengths no longer add up to its size (spans only grow or die).
  struct Bigram {
    float score;
    std::int64_t left, right;
    std::size_t size;
  };
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_pair = [&](std::int64_t l, std::int64_t r) {
    if (l < 0 || r < 0) return;
    const Symbol& a = sym[static_cast<std::size_t>(l)];
    const Symbol& b = sym[static_cast<std::size_t>(r)];
    const std::int32_t id = find(std::string_view(text).substr(a.start, a.n + b.n));
    if (id < 0) return;
    queue.push({scores_[static_cast<std::size_t>(id)], l, r, a.n + b.n});
  };
  for (std::size_t i = 1; i < sym.size(); ++i)
    try_pair(static_cast<std::int64_t>(i - 1), static_cast<std::int64_t>(i));

  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Symbol& a = sym[static_cast<std::size_t>(bg.left)];
    Symbol& b = sym[static_cast<std::size_t>(bg.right)];
    if (a.n == 0 || b.n == 0 || a.n + b.n != bg.size) continue;
    a.n += b.n;
    b.n = 0;
    a.next = b.next;
    if (b.next >= 0) sym[static_cast<std::size_t>(b.next)].prev = bg.left;
    try_pair(a.prev, bg.left);
    try_pair(bg.left, a.next);
  }

  for (std::int64_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
    const Symbol& s = sym[static_cast<std::size_t>(i)];
    const std::string_view span = std::string_view(text).substr(s.start, s.n);
    const std::int32_t id = find(span);
    if (id >= 0) {
      out.push_back(id);
    } else {
      for (char c : span) out.push_back(byte_token_[static_cast<unsigned char>(c)]);
    }
  }
}

}  // namespace kvcache::llama
