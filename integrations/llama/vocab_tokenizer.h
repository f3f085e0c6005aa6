// VocabTokenizer: what the GGUF tokenizers (SentencePiece-style and byte-level BPE) share: the
// token table, text lookup, special-token ids and flags, the special-token partition of the
// input, and decode() from a per-token cache of printed bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "llama/gguf_vocab.h"
#include "llama/text_tokenizer.h"

namespace kvcache::llama {

/// Special-token ids and flags after defaults were applied (-1 = none).
struct SpecialIds {
  std::int32_t bos = -1;
  std::int32_t eos = -1;
  bool add_bos = false;
};

class VocabTokenizer : public TextTokenizer {
 public:
  /// A piece of the input after the special-token partition: a special token (token >= 0, text
  /// is its occurrence) or text for the model's own algorithm (token == -1).
  struct Fragment {
    std::string_view text;
    std::int32_t token = -1;
  };

  VocabTokenizer(const VocabTokenizer&) = delete;
  VocabTokenizer& operator=(const VocabTokenizer&) = delete;

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool add_eos,
                                   bool parse_special) const final;
  /// Cached bytes of `token`; one leading space dropped when the tokenizer adds a space prefix
  /// and `prev` is -1 or a special token (the encoder prefixed a space there).
  std::string_view decode(std::int32_t prev, std::int32_t token) const final;
  std::uint32_t vocab_size() const noexcept final { return static_cast<std::uint32_t>(pieces_.size()); }
  std::int32_t bos() const noexcept final { return ids_.bos; }
  std::int32_t eos() const noexcept final { return ids_.eos; }
  bool add_bos_default() const noexcept final { return ids_.add_bos; }
  std::string_view piece(std::int32_t token) const final;
  TokenKind kind(std::int32_t token) const final;
  std::string_view model() const noexcept final { return model_; }
  std::string_view pre() const noexcept final { return pre_; }

  /// `text` cut at occurrences of special tokens, as llama.cpp's tokenizer_st_partition: tokens
  /// longest first (then lowest id), each taking every non-overlapping occurrence (leftmost
  /// first) in the text fragments left by longer ones. Control and unknown tokens take part
  /// only with `parse_special`; user-defined tokens always. Views point into `text`.
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;

  /// Token whose piece is exactly `text`, or -1 (empty pieces never match).
  std::int32_t find(std::string_view text) const;

 protected:
  /// Validates the vocabulary-wide metadata of `v` (token count against scores and types, types
  /// in range, duplicates, BOS/EOS in range); `label` is "GGUF file '<path>'".
  VocabTokenizer(const GgufVocab& v, std::string label, SpecialIds ids, std::string pre);
  ~VocabTokenizer() override = default;

  /// Appends the ids of a text fragment. `after_special`: the fragment starts the text or follows
  /// a special token (where a SentencePiece model adds its space prefix).
  virtual void encode_text(std::string_view text, bool after_special,
                           std::vector<std::int32_t>& out) const = 0;

  /// Throws FormatError "<label>: key '<key>' <message>".
  [[noreturn]] void fail(std::string_view key, const std::string& message) const;
  /// Must be called by the derived constructor: what decode() prints for each token, and
  /// whether decode() drops the space prefix the encoder adds.
  void set_decoded(std::vector<std::string> decoded, bool strip_space_prefix);

  const std::string& label() const noexcept { return label_; }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  std::string label_;                ///< "GGUF file '<path>'"
  std::string model_, pre_;          ///< tokenizer.ggml.model / .pre
  std::vector<std::string> pieces_;  ///< token text by id
  std::vector<TokenKind> kinds_;     ///< token type by id
  std::unordered_map<std::string, std::int32_t, Hash, std::equal_to<>> lookup_;  ///< piece -> id
  std::vector<std::int32_t> specials_;  ///< control/unknown/user-defined ids, longest piece first
  SpecialIds ids_;
  std::vector<std::string> decoded_;  ///< decode() output by id
  bool strip_space_prefix_ = false;   ///< decode() drops one leading space after specials
};

}  // namespace kvcache::llama
