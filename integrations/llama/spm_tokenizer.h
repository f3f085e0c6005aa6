// SpmTokenizer: the SentencePiece-style tokenizer of GGUF files whose tokenizer.ggml.model is
// "llama" (Llama 1/2, TinyLlama, Mistral, llama2.c conversions), encoded as llama.cpp's
// llm_tokenizer_spm does.
#pragma once

#include <array>

#include "llama/vocab_tokenizer.h"

namespace kvcache::llama {

/// Encoding of a text fragment: spaces become U+2581 ("▁"), with one "▁" in front when
/// add_space_prefix is on and the fragment starts the text or follows a special token; the
/// fragment is cut into UTF-8 characters (the length a lead byte announces, clipped at the end;
/// a stray continuation byte is a character of its own); then the adjacent pair whose
/// concatenation is a token with the highest score is merged, leftmost on ties, until none is;
/// a final symbol that is not a token is emitted as its bytes' "<0xNN>" tokens (or, when those
/// are absent, the token spelling the byte itself).
///
/// decode: "▁" prints as a space, BYTE tokens as their byte, control and unknown tokens as "",
/// user-defined tokens as their text; the space prefix is dropped after a special token or at the
/// start. Lossless (decode of encode is the text) for any text without "▁" and, when
/// parse_special is off, without the text of a user-defined token that is not the piece itself.
class SpmTokenizer final : public VocabTokenizer {
 public:
  /// Validates what SentencePiece needs on top of VocabTokenizer (scores finite, BYTE tokens
  /// spelled <0xNN>, a token for each of the 256 bytes); see make_gguf_tokenizer for errors.
  SpmTokenizer(const GgufVocab& v, std::string label, SpecialIds ids);

 private:
  void encode_text(std::string_view text, bool after_special, std::vector<std::int32_t>& out) const override;

  std::vector<float> scores_;                 ///< merge priority by id (higher first); 0 when absent
  std::array<std::int32_t, 256> byte_token_;  ///< byte-fallback token of each byte
  bool add_space_prefix_ = true;              ///< tokenizer.ggml.add_space_prefix
};

}  // namespace kvcache::llama
