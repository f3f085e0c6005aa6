// The tokenizer metadata of a GGUF file as plain values, and the tokenizer it describes.
//
// load_gguf_tokenizer (gguf_tokenizer.h) fills a GgufVocab from a file's tokenizer.ggml.* keys;
// tests build one by hand. make_gguf_tokenizer validates it completely and builds the tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llama/text_tokenizer.h"

namespace kvcache::llama {

/// Values of the GGUF keys a tokenizer is built from (absent keys stay empty / nullopt).
struct GgufVocab {
  std::string file;                       ///< the file's path, for error messages
  std::string model;                      ///< tokenizer.ggml.model: "llama" or "gpt2"
  std::optional<std::string> pre;         ///< tokenizer.ggml.pre (gpt2 only)
  std::vector<std::string> tokens;        ///< tokenizer.ggml.tokens, by id
  std::vector<float> scores;              ///< tokenizer.ggml.scores (llama; empty when absent)
  std::vector<std::int32_t> token_types;  ///< tokenizer.ggml.token_type (empty: all normal)
  std::vector<std::string> merges;        ///< tokenizer.ggml.merges, "left right" by rank (gpt2)
  std::optional<std::uint64_t> bos_id;    ///< tokenizer.ggml.bos_token_id
  std::optional<std::uint64_t> eos_id;    ///< tokenizer.ggml.eos_token_id
  std::optional<bool> add_bos;            ///< tokenizer.ggml.add_bos_token
  std::optional<bool> add_space_prefix;   ///< tokenizer.ggml.add_space_prefix (llama)
};

/// The tokenizer `vocab` describes, with llama.cpp's defaults for absent keys:
/// - "llama": SentencePiece-style (SpmTokenizer); BOS 1, EOS 2, add BOS, add space prefix;
/// - "gpt2": byte-level BPE (BpeTokenizer) with the pre-tokenizer named by `pre` ("default" when
///   absent); BOS = EOS = 11 when the vocabulary has that id; add BOS only for the llama3 family.
/// A BOS/EOS id of 0xFFFFFFFF (llama.cpp's "none" written as u32) means the vocabulary has none.
///
/// Throws kvcache::FormatError "GGUF file '<file>': key '<key>' ..." for: an unknown model or
/// pre-tokenizer (listing the supported ones), no tokens, scores or token types whose count
/// differs from the tokens', a score that is not finite, a token type outside 0..6, a duplicate
/// token, a BOS/EOS id out of range, add_bos_token without a BOS token, a BYTE-type token not
/// spelled <0xNN>, (llama) a byte without a byte-fallback token ("<0xNN>" or the byte itself),
/// (gpt2) missing merges and a merge that is not "left right" or names a piece (or a
/// concatenation) that is not a token. A gpt2 vocabulary may lack some bytes' characters (real
/// ones do); encoding drops those bytes.
std::unique_ptr<TextTokenizer> make_gguf_tokenizer(GgufVocab vocab);

}  // namespace kvcache::llama
