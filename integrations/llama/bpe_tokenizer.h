// BpeTokenizer: the byte-level BPE tokenizer of GGUF files whose tokenizer.ggml.model is "gpt2"
// (GPT-2, Llama 3, Qwen2, SmolLM, StarCoder, Falcon, DeepSeek Coder), encoded as llama.cpp's
// llm_tokenizer_bpe does.
#pragma once

#include <array>
#include <memory>
#include <unordered_map>

#include "llama/bpe_pretokenizer.h"
#include "llama/vocab_tokenizer.h"

namespace kvcache::llama {

/// GPT-2's byte-to-unicode map: the printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for
/// themselves, the other 68 bytes for U+0100 onwards in byte order (space is U+0120 "Ġ").
char32_t gpt2_byte_to_unicode(unsigned char byte);

/// Encoding of a text fragment: the pre-tokenizer cuts it into words; each word's bytes become
/// one symbol each (the token of the byte's GPT-2 character); then the adjacent pair with the
/// lowest merge rank (tokenizer.ggml.merges order) is merged, leftmost on ties, until no pair
/// has a rank. With ignore_merges (llama3 family) a word that is itself a token is emitted whole.
///
/// decode: a normal token prints the bytes its characters stand for (a character outside the
/// byte map prints as itself), a user-defined token its text, control and unknown tokens "".
/// Output can be part of a UTF-8 sequence. Lossless for any bytes when parse_special is off,
/// except bytes whose GPT-2 character is not a token: real vocabularies lack some (StarCoder 0xF1
/// and the bytes valid UTF-8 never holds, Falcon control bytes such as 0x03), and encoding drops
/// them, as llama.cpp does.
/// No clean-up of spaces before punctuation is applied (llama.cpp's clean_spaces).
class BpeTokenizer final : public VocabTokenizer {
 public:
  /// Validates the merges and the byte tokens; see make_gguf_tokenizer for errors. `pre` names
  /// the pre-tokenizer (already checked to exist).
  BpeTokenizer(const GgufVocab& v, std::string label, SpecialIds ids, std::unique_ptr<BpePreTokenizer> pre,
               std::string pre_name);

 private:
  void encode_text(std::string_view text, bool after_special, std::vector<std::int32_t>& out) const override;

  struct Merge {
    std::uint32_t rank;   ///< index in tokenizer.ggml.merges (lower merges first)
    std::int32_t result;  ///< token of the concatenation
  };
  std::unique_ptr<BpePreTokenizer> pre_tokenizer_;
  std::unordered_map<std::uint64_t, Merge> merges_;  ///< (left id << 32 | right id) -> merge
  std::array<std::int32_t, 256> byte_token_;         ///< token of each byte's GPT-2 character, -1 if none
};

}  // namespace kvcache::llama
