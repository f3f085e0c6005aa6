// TextTokenizer: the one interface the runtime and kvstream use for any tokenizer (the llama2.c
// tokenizer.bin format, or a GGUF file's SentencePiece or byte-level BPE vocabulary).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace kvcache::llama {

/// What a token is, as GGUF's tokenizer.ggml.token_type numbers say (llama.cpp's
/// llama_token_type). The llama2.c tokenizer maps its fixed layout onto the same kinds.
enum class TokenKind : std::int32_t {
  undefined = 0,
  normal = 1,        ///< ordinary text
  unknown = 2,       ///< <unk>
  control = 3,       ///< BOS, EOS, chat markers: never produced from text unless parse_special
  user_defined = 4,  ///< added tokens: matched in the text before the model's own splitting
  unused = 5,
  byte = 6,  ///< SentencePiece byte fallback "<0xNN>"
};

/// Encoding text into token ids and token ids back into bytes.
///
/// Token ids are int32 in [0, vocab_size()); -1 stands for "no such token" (bos()/eos() of a
/// vocabulary without one, and `prev` at the start of a text).
///
/// Thread safety: every method is const and safe to call from any number of threads at once.
/// Errors: methods taking a token id throw kvcache::InvalidArgument when it is out of range.
class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;

  /// Ids of `text`: BOS first when `add_bos` (and the vocabulary has one), EOS last when
  /// `add_eos`. With `parse_special`, the text of every control, unknown and user-defined token
  /// found in `text` becomes that token (longest first) instead of being split like text;
  /// without it only user-defined tokens are (as llama.cpp and Hugging Face do). `text` may hold
  /// any bytes; what a tokenizer does with invalid UTF-8 is documented by the implementation.
  virtual std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool add_eos,
                                           bool parse_special) const = 0;

  /// The bytes to print for `token` when it follows `prev` (-1 at the start of a text).
  /// Concatenating decode(ids[i-1], ids[i]) over an encoding gives the text back for every
  /// lossless case the implementation documents. Control and unknown tokens give "" (callers
  /// decide how to show them; piece() has their text). For byte-level BPE and byte-fallback
  /// tokens the result may be part of a UTF-8 sequence that the following tokens complete:
  /// write bytes through, never validate per token. The view lives as long as the tokenizer.
  virtual std::string_view decode(std::int32_t prev, std::int32_t token) const = 0;

  /// Number of tokens; every id is below it.
  virtual std::uint32_t vocab_size() const noexcept = 0;
  /// Beginning- and end-of-sequence tokens, or -1 when the vocabulary has none.
  virtual std::int32_t bos() const noexcept = 0;
  virtual std::int32_t eos() const noexcept = 0;
  /// Whether the model expects BOS in front of a prompt (GGUF tokenizer.ggml.add_bos_token).
  virtual bool add_bos_default() const noexcept = 0;

  /// The token's text as the vocabulary stores it (SentencePiece "▁the", byte-level "Ġthe").
  virtual std::string_view piece(std::int32_t token) const = 0;
  virtual TokenKind kind(std::int32_t token) const = 0;
  bool is_control(std::int32_t token) const { return kind(token) == TokenKind::control; }

  /// "llama2.c", "llama" (SentencePiece) or "gpt2" (byte-level BPE): the tokenizer.ggml.model
  /// spelling, for `kvstream inspect` and JSON reports.
  virtual std::string_view model() const noexcept = 0;
  /// The BPE pre-tokenizer (tokenizer.ggml.pre), "" for the others.
  virtual std::string_view pre() const noexcept = 0;
};

}  // namespace kvcache::llama
