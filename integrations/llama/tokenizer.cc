#include "llama/tokenizer.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <queue>

#include "kvcache/error.h"
#include "llama/binary_io.h"

namespace kvcache::llama {
namespace {

constexpr std::string_view kTokenizerWhat = "tokenizer";

// "<0xNN>" for byte b, the spelling llama2.c's export uses for byte-fallback pieces.
std::string byte_piece(unsigned b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", b);
  return buf;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// llama2.c starts its best score at -1e10 and merges only pairs scoring strictly above it.
constexpr float kNoMergeScore = -1e10f;

}  // namespace

int parse_byte_piece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  const int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

Tokenizer Tokenizer::load(const std::filesystem::path& path, std::uint32_t vocab_size) {
  const std::vector<std::byte> data = read_file_bytes(path, kTokenizerWhat);
  ByteReader r(data, path.string(), kTokenizerWhat);
  const std::int32_t max_len = r.i32("max_token_length");
  if (max_len <= 0) r.fail("field 'max_token_length' = " + std::to_string(max_len) + " must be positive");

  Tokenizer t;
  t.pieces_.reserve(vocab_size);
  t.scores_.reserve(vocab_size);
  for (std::uint32_t i = 0; i < vocab_size; ++i) {
    const std::string tok = "token " + std::to_string(i);
    if (r.remaining() == 0) {
      r.fail("holds only " + std::to_string(i) + " tokens but the model's vocab_size is " +
             std::to_string(vocab_size) + " (tokenizer and model do not match)");
    }
    const float score = r.f32("score of " + tok);
    if (!std::isfinite(score)) r.fail("field 'score of " + tok + "' is not finite");
    const std::int32_t len = r.i32("length of " + tok);
    if (len < 0 || len > max_len) {
      r.fail("field 'length of " + tok + "' = " + std::to_string(len) +
             " is outside [0, max_token_length = " + std::to_string(max_len) + "]");
    }
    const auto bytes = r.bytes(static_cast<std::size_t>(len), "bytes of " + tok);
    t.pieces_.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    t.scores_.push_back(score);
  }
  if (r.remaining() != 0) {
    r.fail(std::to_string(r.remaining()) + " trailing bytes after token " + std::to_string(vocab_size - 1) +
           ": the file holds more tokens than the model's vocab_size " + std::to_string(vocab_size) +
           " (tokenizer and model do not match)");
  }
  // encode() falls back to token 3 + b for byte b, exactly like llama2.c; insist the file agrees.
  if (vocab_size < kFirstByteToken + 256u)
    r.fail("vocab_size " + std::to_string(vocab_size) + " has no byte tokens");
  for (unsigned b = 0; b < 256; ++b) {
    const std::string want = byte_piece(b);
    if (t.pieces_[kFirstByteToken + b] != want) {
      r.fail("token " + std::to_string(kFirstByteToken + b) + " should be the byte-fallback piece '" + want +
             "'");
    }
  }

  t.decoded_.resize(vocab_size);
  for (std::uint32_t i = 0; i < vocab_size; ++i) {
    const std::string& p = t.pieces_[i];
    const int byte = parse_byte_piece(p);
    if (i == kUnk || i == kBos || i == kEos) {
      t.decoded_[i].clear();
    } else if (byte >= 0) {
      t.decoded_[i] = std::string(1, static_cast<char>(byte));
    } else {
      t.decoded_[i] = p;
    }
    t.ids_.emplace(p, static_cast<std::int32_t>(i));  // keeps the first of duplicate pieces
  }
  return t;
}

std::int32_t Tokenizer::lookup(std::string_view text) const {
  const auto it = ids_.find(std::string(text));
  return it == ids_.end() ? -1 : it->second;
}

std::string_view Tokenizer::piece(std::int32_t token) const {
  if (token < 0 || static_cast<std::uint32_t>(token) >= pieces_.size()) {
    throw InvalidArgument("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                          std::to_string(pieces_.size()) + ")");
  }
  return pieces_[static_cast<std::size_t>(token)];
}

float Tokenizer::score(std::int32_t token) const {
  piece(token);  // range check
  return scores_[static_cast<std::size_t>(token)];
}

std::string_view Tokenizer::decode(std::int32_t prev, std::int32_t token) const {
  piece(token);  // range check
  std::string_view s = decoded_[static_cast<std::size_t>(token)];
  if ((prev == kBos || prev < 0) && !s.empty() && s.front() == ' ') s.remove_prefix(1);
  return s;
}

TokenKind Tokenizer::kind(std::int32_t token) const {
  piece(token);  // range check
  if (token == kUnk) return TokenKind::unknown;
  if (token == kBos || token == kEos) return TokenKind::control;
  if (token >= kFirstByteToken && token < kFirstByteToken + 256) return TokenKind::byte;
  return TokenKind::normal;
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool bos, bool eos) const {
  // Symbols form a doubly linked list; a merge rewrites the left symbol and unlinks the right one.
  struct Symbol {
    std::int32_t token;
    std::int64_t prev, next;  // -1 at the ends
    std::uint32_t version;    // bumped on every change, so stale heap entries are recognised
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(text.size() + 3);
  auto push = [&](std::int32_t token) {
    const auto n = static_cast<std::int64_t>(sym.size());
    sym.push_back({token, n - 1, -1, 0, true});
    if (n > 0) sym[static_cast<std::size_t>(n - 1)].next = n;
  };
  auto push_bytes = [&](std::string_view s) {
    for (char c : s) push(kFirstByteToken + static_cast<unsigned char>(c));
  };

  if (bos) push(kBos);  // llama2.c merges over BOS too (it never matches a vocabulary pair)
  if (!text.empty()) {
    const std::int32_t space = lookup(" ");
    if (space >= 0) {
      push(space);
    } else {
      push_bytes(" ");
    }
  }
  // One symbol per UTF-8 code point: a lead byte plus up to 3 continuation bytes, as llama2.c
  // groups them (malformed sequences fall out of the same rule).
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 1;
    while (i + len < text.size() && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80 && len < 4)
      ++len;
    const std::string_view cp = text.substr(i, len);
    const std::int32_t id = lookup(cp);
    if (id >= 0) {
      push(id);
    } else {
      push_bytes(cp);
    }
    i += len;
  }

  // Score-ordered merging. llama2.c rescans all pairs after every merge and takes the highest
  // score, leftmost on ties; a max-heap keyed on (score, -left index) with lazy invalidation picks
  // the same pair each step, because symbols never move and the left symbol keeps its index.
  struct Candidate {
    float score;
    std::int32_t merged;
    std::int64_t left, right;
    std::uint32_t left_version, right_version;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  std::string pair;
  auto consider = [&](std::int64_t l) {
    if (l < 0) return;
    const Symbol& a = sym[static_cast<std::size_t>(l)];
    if (a.next < 0) return;
    const Symbol& b = sym[static_cast<std::size_t>(a.next)];
    pair.assign(pieces_[static_cast<std::size_t>(a.token)]);
    pair.append(pieces_[static_cast<std::size_t>(b.token)]);
    const auto it = ids_.find(pair);
    if (it == ids_.end()) return;
    const float s = scores_[static_cast<std::size_t>(it->second)];
    if (s > kNoMergeScore) heap.push({s, it->second, l, a.next, a.version, b.version});
  };
  for (std::size_t i = 0; i + 1 < sym.size(); ++i) consider(static_cast<std::int64_t>(i));

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& a = sym[static_cast<std::size_t>(c.left)];
    Symbol& b = sym[static_cast<std::size_t>(c.right)];
    if (!a.alive || !b.alive || a.next != c.right || a.version != c.left_version ||
        b.version != c.right_version) {
      continue;  // stale: one side changed since this pair was scored
    }
    a.token = c.merged;
    ++a.version;
    b.alive = false;
    a.next = b.next;
    if (b.next >= 0) sym[static_cast<std::size_t>(b.next)].prev = c.left;
    consider(a.prev);
    consider(c.left);
  }

  std::vector<std::int32_t> out;
  out.reserve(sym.size() + 1);
  for (std::int64_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
    out.push_back(sym[static_cast<std::size_t>(i)].token);
  }
  if (eos) out.push_back(kEos);
  return out;
}

}  // namespace kvcache::llama
