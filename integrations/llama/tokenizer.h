// The llama2.c tokenizer (tokenizer.bin / tok512.bin): a vocabulary of byte-string pieces with
// merge scores, encoded by greedy score-ordered BPE with byte fallback.
//
// File format: int32 max_token_length, then for each of the model's vocab_size tokens:
// float32 score, int32 byte length, that many bytes. Tokens 0, 1, 2 are <unk>, BOS, EOS;
// tokens 3..258 are the byte-fallback pieces "<0x00>".."<0xFF>".
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "llama/text_tokenizer.h"

namespace kvcache::llama {

/// The byte a byte-fallback piece "<0xNN>" (hex, either case) stands for, or -1 for any other
/// piece. Shared by the llama2.c tokenizer and the GGUF SentencePiece tokenizer.
int parse_byte_piece(std::string_view piece);

/// Usable through TextTokenizer: kind() says unknown for 0, control for BOS/EOS, byte for 3..258;
/// there is no special-token text to parse (parse_special is ignored), and model() is "llama2.c".
class Tokenizer final : public TextTokenizer {
 public:
  static constexpr std::int32_t kUnk = 0;
  static constexpr std::int32_t kBos = 1;
  static constexpr std::int32_t kEos = 2;
  static constexpr std::int32_t kFirstByteToken = 3;  ///< token of byte b is 3 + b

  /// Loads `path`, which must hold exactly `vocab_size` tokens (the model's). Throws
  /// kvcache::FormatError naming the file and the field for a truncated or garbled file
  /// (negative or oversized lengths, non-finite scores, missing byte-fallback pieces, a token
  /// count that does not match vocab_size), kvcache::Error when the file cannot be opened.
  static Tokenizer load(const std::filesystem::path& path, std::uint32_t vocab_size);

  std::uint32_t vocab_size() const noexcept override { return static_cast<std::uint32_t>(pieces_.size()); }

  /// Encodes `text` as llama2.c's encode() does: optional BOS, then (for non-empty text) the
  /// piece " " as a dummy prefix, then one symbol per UTF-8 code point (a code point missing from
  /// the vocabulary falls back to its byte tokens), then repeatedly merges the adjacent pair whose
  /// concatenation is in the vocabulary with the highest score (leftmost on ties) until none is,
  /// then optional EOS. Same result as llama2.c's quadratic loop in O(n log n) (a heap of
  /// candidate pairs), so whole files can be encoded. Thread safe (const).
  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const;
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool add_eos,
                                   bool /*parse_special*/) const override {
    return encode(text, add_bos, add_eos);
  }

  /// Text of `token` printed after `prev`: byte tokens give their byte, <unk>/BOS/EOS give ""
  /// (callers decide how to show story boundaries), and a leading space is dropped right after
  /// BOS or at the start of a text (`prev` < 0): the encoder's dummy prefix. The view lives as
  /// long as the tokenizer. Throws kvcache::InvalidArgument when `token` is not in [0, vocab_size).
  std::string_view decode(std::int32_t prev, std::int32_t token) const override;

  /// The raw piece of `token` as stored in the file (throws InvalidArgument when out of range).
  std::string_view piece(std::int32_t token) const override;
  float score(std::int32_t token) const;
  TokenKind kind(std::int32_t token) const override;
  std::int32_t bos() const noexcept override { return kBos; }
  std::int32_t eos() const noexcept override { return kEos; }
  bool add_bos_default() const noexcept override { return true; }
  std::string_view model() const noexcept override { return "llama2.c"; }
  std::string_view pre() const noexcept override { return ""; }
  /// Token whose piece is exactly `text`, or -1.
  std::int32_t lookup(std::string_view text) const;

 private:
  std::vector<std::string> pieces_;   ///< raw pieces, by token id
  std::vector<std::string> decoded_;  ///< what decode() prints for each token (before BOS stripping)
  std::vector<float> scores_;         ///< merge priority, by token id (higher merges first)
  std::unordered_map<std::string, std::int32_t> ids_;  ///< piece -> first token with that piece
};

}  // namespace kvcache::llama
