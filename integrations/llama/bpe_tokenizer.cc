#include "llama/bpe_tokenizer.h"

#include <queue>

#include "kvcache/error.h"

namespace kvcache::llama {
namespace {

void append_utf8(std::string& s, char32_t c) {
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// The code point starting at s[pos] and its length in bytes; {-1, 1} for an invalid sequence.
std::pair<std::int32_t, std::size_t> next_utf8(std::string_view s, std::size_t pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t len = b0 >= 0xF0 && b0 < 0xF5 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC2 && b0 < 0xE0 ? 2 : 0;
  if (len == 0 || pos + len > s.size()) return {-1, 1};
  std::int32_t cp = b0 & (0x7F >> len);
  for (std::size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return {-1, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr std::int32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return {-1, 1};
  return {cp, len};
}

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32 | static_cast<std::uint32_t>(b);
}

}  // namespace

char32_t gpt2_byte_to_unicode(unsigned char byte) {
  const bool printable = (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
  if (printable) return byte;
  // The non-printable bytes, counted in order, follow U+0100.
  unsigned skipped = 0;
  for (unsigned b = 0; b < byte; ++b) {
    const bool p = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    if (!p) ++skipped;
  }
  return static_cast<char32_t>(0x100 + skipped);
}

BpeTokenizer::BpeTokenizer(const GgufVocab& v, std::string label, SpecialIds ids,
                           std::unique_ptr<BpePreTokenizer> pre, std::string pre_name)
    : VocabTokenizer(v, std::move(label), ids, std::move(pre_name)), pre_tokenizer_(std::move(pre)) {
  std::unordered_map<char32_t, unsigned char> unicode_to_byte;
  for (unsigned b = 0; b < 256; ++b) {
    const char32_t c = gpt2_byte_to_unicode(static_cast<unsigned char>(b));
    unicode_to_byte[c] = static_cast<unsigned char>(b);
    std::string s;
    append_utf8(s, c);
    // Vocabularies may lack rare bytes (StarCoder has no 0xF1, Falcon no 0x03): encoding drops
    // such a byte, as llama.cpp does.
    const std::int32_t id = find(s);
    byte_token_[b] = id;
  }

  if (v.merges.empty())
    fail("tokenizer.ggml.merges", "is missing or empty (a gpt2 tokenizer needs its merges)");
  merges_.reserve(v.merges.size());
  std::string joined;
  for (std::size_t r = 0; r < v.merges.size(); ++r) {
    const std::string& m = v.merges[r];
    auto bad = [&](const std::string& why) {
      fail("tokenizer.ggml.merges", "entry " + std::to_string(r) + " '" + m + "'" + why);
    };
    const std::size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (space == std::string::npos) bad(" is not 'left right'");
    const std::string_view left = std::string_view(m).substr(0, space);
    const std::string_view right = std::string_view(m).substr(space + 1);
    const std::int32_t a = find(left), b = find(right);
    if (a < 0) bad(" names '" + std::string(left) + "', which is not a token");
    if (b < 0) bad(" names '" + std::string(right) + "', which is not a token");
    joined.assign(left).append(right);
    const std::int32_t result = find(joined);
    if (result < 0) bad(": the concatenation '" + joined + "' is not a token");
    merges_.emplace(pair_key(a, b), Merge{static_cast<std::uint32_t>(r), result});  // first rank wins
  }

  const auto n = static_cast<std::int32_t>(vocab_size());
  std::vector<std::string> decoded(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) {
    const std::string_view p = piece(i);
    std::string& d = decoded[static_cast<std::size_t>(i)];
    const TokenKind k = kind(i);
    if (k == TokenKind::user_defined) {
      d = p;
    } else if (k == TokenKind::normal || k == TokenKind::byte) {
      for (std::size_t pos = 0; pos < p.size();) {
        const auto [cp, len] = next_utf8(p, pos);
        const auto it = cp < 0 ? unicode_to_byte.end() : unicode_to_byte.find(static_cast<char32_t>(cp));
        if (it != unicode_to_byte.end()) {
          d += static_cast<char>(it->second);
        } else {
          d.append(p.substr(pos, len));
        }
        pos += len;
      }
    }
  }
  set_decoded(std::move(decoded), false);
}

void BpeTokenizer::encode_text(std::string_view text, bool /*after_special*/,
                               std::vector<std::int32_t>& out) const {
  struct Symbol {
    std::int32_t token;
    std::int32_t prev, next;  // -1 at the ends
    std::uint32_t version;    // bumped on every change, so stale queue entries are recognised
    bool alive;
  };
  struct Candidate {
    std::uint32_t rank;
    std::int32_t result, left, right;
    std::uint32_t left_version, right_version;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::vector<Symbol> sym;
  std::string encoded;

  for (const std::string_view word : pre_tokenizer_->split(text)) {
    if (pre_tokenizer_->ignore_merges()) {
      encoded.clear();
      for (char c : word) append_utf8(encoded, gpt2_byte_to_unicode(static_cast<unsigned char>(c)));
      const std::int32_t id = find(encoded);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
    }
    sym.clear();
    for (char c : word) {
      const std::int32_t token = byte_token_[static_cast<unsigned char>(c)];
      if (token < 0) continue;  // a byte the vocabulary cannot spell
      const auto idx = static_cast<std::int32_t>(sym.size());
      sym.push_back({token, idx - 1, idx + 1, 0, true});
    }
    if (!sym.empty()) sym.back().next = -1;
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
    auto consider = [&](std::int32_t l) {
      if (l < 0) return;
      const Symbol& a = sym[static_cast<std::size_t>(l)];
      if (a.next < 0) return;
      const Symbol& b = sym[static_cast<std::size_t>(a.next)];
      const auto it = merges_.find(pair_key(a.token, b.token));
      if (it == merges_.end()) return;
      queue.push({it->second.rank, it->second.result, l, a.next, a.version, b.version});
    };
    for (std::size_t i = 0; i + 1 < sym.size(); ++i) consider(static_cast<std::int32_t>(i));
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& a = sym[static_cast<std::size_t>(c.left)];
      Symbol& b = sym[static_cast<std::size_t>(c.right)];
      if (!a.alive || !b.alive || a.next != c.right || a.version != c.left_version ||
          b.version != c.right_version)
        continue;  // stale: a side changed since this pair was queued
      a.token = c.result;
      ++a.version;
      b.alive = false;
      a.next = b.next;
      if (b.next >= 0) sym[static_cast<std::size_t>(b.next)].prev = c.left;
      consider(a.prev);
      consider(c.left);
    }
    for (std::int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next)
      out.push_back(sym[static_cast<std::size_t>(i)].token);
  }
}

}  // namespace kvcache::llama
