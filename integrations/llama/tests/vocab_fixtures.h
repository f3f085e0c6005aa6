// Hand-made GGUF vocabularies for the tokenizer tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama/gguf_vocab.h"
#include "llama/text_tokenizer.h"

namespace kvcache::llama::test {

/// A SentencePiece ("llama") vocabulary laid out like Llama 2's: 0 <unk> (unknown), 1 <s> and
/// 2 </s> (control), 3..258 the byte pieces <0x00>..<0xFF> (byte), then `pieces` (normal, with
/// their scores) in order: the first of them has id 259.
GgufVocab spm_vocab(const std::vector<std::pair<std::string, float>>& pieces);

/// A byte-level BPE ("gpt2") vocabulary: ids 0..255 are the GPT-2 characters of bytes 0..255,
/// then one token per merge result in merge order (ids 256, 257, ...), then `extra` tokens
/// (normal). `merges` are "left right" in rank order; `pre` the pre-tokenizer.
GgufVocab bpe_vocab(const std::vector<std::string>& merges, const std::string& pre = "gpt-2",
                    const std::vector<std::string>& extra = {});

/// The tokenizer `v` describes (make_gguf_tokenizer).
std::unique_ptr<TextTokenizer> make(GgufVocab v);

/// The text of `ids` decoded one after another, each with its predecessor, as a stream prints it.
std::string decode_all(const TextTokenizer& t, const std::vector<std::int32_t>& ids);

/// The GPT-2 spelling of a byte string ("Ġthe" for " the").
std::string gpt2_chars(const std::string& bytes);

}  // namespace kvcache::llama::test
