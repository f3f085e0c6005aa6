#include "llama/vocab_tokenizer.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "kvcache/error.h"

namespace kvcache::llama {

VocabTokenizer::VocabTokenizer(const GgufVocab& v, std::string label, SpecialIds ids, std::string pre)
    : label_(std::move(label)), model_(v.model), pre_(std::move(pre)), ids_(ids) {
  const std::size_t n = v.tokens.size();
  if (n == 0) fail("tokenizer.ggml.tokens", "is missing or empty");
  if (n > static_cast<std::size_t>(INT32_MAX)) fail("tokenizer.ggml.tokens", "holds more than 2^31-1 tokens");
  if (!v.scores.empty() && v.scores.size() != n) {
    fail("tokenizer.ggml.scores", "has " + std::to_string(v.scores.size()) +
                                      " entries but tokenizer.ggml.tokens has " + std::to_string(n));
  }
  for (std::size_t i = 0; i < v.scores.size(); ++i) {
    if (!std::isfinite(v.scores[i]))
      fail("tokenizer.ggml.scores", "entry " + std::to_string(i) + " is not finite");
  }
  if (!v.token_types.empty() && v.token_types.size() != n) {
    fail("tokenizer.ggml.token_type", "has " + std::to_string(v.token_types.size()) +
                                          " entries but tokenizer.ggml.tokens has " + std::to_string(n));
  }
  pieces_ = v.tokens;
  kinds_.assign(n, TokenKind::normal);
  for (std::size_t i = 0; i < v.token_types.size(); ++i) {
    const std::int32_t t = v.token_types[i];
    if (t < 0 || t > static_cast<std::int32_t>(TokenKind::byte)) {
      fail("tokenizer.ggml.token_type",
           "entry " + std::to_string(i) + " = " + std::to_string(t) + " is not a token type (0..6)");
    }
    kinds_[i] = static_cast<TokenKind>(t);
  }
  lookup_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (pieces_[i].empty()) continue;  // llama.cpp renames empty tokens; they never match text
    const auto [it, fresh] = lookup_.emplace(pieces_[i], static_cast<std::int32_t>(i));
    if (!fresh) {
      fail("tokenizer.ggml.tokens", "holds '" + pieces_[i] + "' twice (ids " + std::to_string(it->second) +
                                        " and " + std::to_string(i) + ")");
    }
  }
  for (const auto& [key, id] : {std::pair<const char*, std::int32_t>{"tokenizer.ggml.bos_token_id", ids_.bos},
                                {"tokenizer.ggml.eos_token_id", ids_.eos}}) {
    if (id >= 0 && static_cast<std::size_t>(id) >= n) {
      fail(key, "= " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(n) + ")");
    }
  }
  if (ids_.add_bos && ids_.bos < 0)
    fail("tokenizer.ggml.add_bos_token", "is true but the vocabulary has no BOS token");

  for (std::size_t i = 0; i < n; ++i) {
    const TokenKind k = kinds_[i];
    if ((k == TokenKind::control || k == TokenKind::unknown || k == TokenKind::user_defined) &&
        !pieces_[i].empty())
      specials_.push_back(static_cast<std::int32_t>(i));
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](std::int32_t a, std::int32_t b) {
    return pieces_[static_cast<std::size_t>(a)].size() > pieces_[static_cast<std::size_t>(b)].size();
  });
}

void VocabTokenizer::fail(std::string_view key, const std::string& message) const {
  throw FormatError(label_ + ": key '" + std::string(key) + "' " + message);
}

void VocabTokenizer::set_decoded(std::vector<std::string> decoded, bool strip_space_prefix) {
  decoded_ = std::move(decoded);
  strip_space_prefix_ = strip_space_prefix;
}

std::string_view VocabTokenizer::piece(std::int32_t token) const {
  if (token < 0 || static_cast<std::size_t>(token) >= pieces_.size()) {
    throw InvalidArgument("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                          std::to_string(pieces_.size()) + ")");
  }
  return pieces_[static_cast<std::size_t>(token)];
}

TokenKind VocabTokenizer::kind(std::int32_t token) const {
  piece(token);  // range check
  return kinds_[static_cast<std::size_t>(token)];
}

std::int32_t VocabTokenizer::find(std::string_view text) const {
  const auto it = lookup_.find(text);
  return it == lookup_.end() ? -1 : it->second;
}

std::string_view VocabTokenizer::decode(std::int32_t prev, std::int32_t token) const {
  piece(token);  // range check
  std::string_view s = decoded_[static_cast<std::size_t>(token)];
  if (strip_space_prefix_ && !s.empty() && s.front() == ' ') {
    bool after_special = prev < 0;
    if (!after_special && static_cast<std::size_t>(prev) < kinds_.size()) {
      const TokenKind k = kinds_[static_cast<std::size_t>(prev)];
      after_special = k == TokenKind::control || k == TokenKind::unknown || k == TokenKind::user_defined;
    }
    if (after_special) s.remove_prefix(1);
  }
  return s;
}

std::vector<VocabTokenizer::Fragment> VocabTokenizer::partition(std::string_view text,
                                                                bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({text, -1});
  std::vector<Fragment> next;
  for (const std::int32_t id : specials_) {
    if (!parse_special && kinds_[static_cast<std::size_t>(id)] != TokenKind::user_defined) continue;
    const std::string_view st = pieces_[static_cast<std::size_t>(id)];
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::size_t start = 0;
      for (std::size_t m; (m = f.text.find(st, start)) != std::string_view::npos; start = m + st.size()) {
        if (m > start) next.push_back({f.text.substr(start, m - start), -1});
        next.push_back({f.text.substr(m, st.size()), id});
      }
      if (start < f.text.size()) next.push_back({f.text.substr(start), -1});
    }
    frags.swap(next);
  }
  return frags;
}

std::vector<std::int32_t> VocabTokenizer::encode(std::string_view text, bool add_bos, bool add_eos,
                                                 bool parse_special) const {
  // Symbol indices inside the encoders are int32.
  if (text.size() > static_cast<std::size_t>(INT32_MAX))
    throw InvalidArgument("encode: text longer than 2 GiB");
  std::vector<std::int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && ids_.bos >= 0) out.push_back(ids_.bos);
  bool after_special = true;
  for (const Fragment& f : partition(text, parse_special)) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
    } else {
      encode_text(f.text, after_special, out);
      after_special = false;
    }
  }
  if (add_eos && ids_.eos >= 0) out.push_back(ids_.eos);
  return out;
}

}  // namespace kvcache::llama
