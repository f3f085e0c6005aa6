#include "llama/gguf_vocab.h"

#include "kvcache/error.h"
#include "llama/binary_io.h"
#include "llama/bpe_tokenizer.h"
#include "llama/spm_tokenizer.h"

namespace kvcache::llama {
namespace {

// llama.cpp writes LLAMA_TOKEN_NULL (-1) into u32 keys as 0xFFFFFFFF.
constexpr std::uint64_t kNoToken = 0xFFFFFFFFu;

std::int32_t special_id(const std::optional<std::uint64_t>& key, std::int32_t fallback, std::size_t n_tokens,
                        const std::string& label, std::string_view name) {
  if (!key) return static_cast<std::size_t>(fallback) < n_tokens ? fallback : -1;
  if (*key == kNoToken) return -1;
  if (*key >= n_tokens) {
    throw FormatError(label + ": key '" + std::string(name) + "' = " + std::to_string(*key) +
                      " is outside the vocabulary [0, " + std::to_string(n_tokens) + ")");
  }
  return static_cast<std::int32_t>(*key);
}

}  // namespace

std::unique_ptr<TextTokenizer> make_gguf_tokenizer(GgufVocab vocab) {
  std::string label = file_label("GGUF file", vocab.file);
  const std::size_t n = vocab.tokens.size();
  SpecialIds ids;
  if (vocab.model == "llama") {
    ids.bos = special_id(vocab.bos_id, 1, n, label, "tokenizer.ggml.bos_token_id");
    ids.eos = special_id(vocab.eos_id, 2, n, label, "tokenizer.ggml.eos_token_id");
    ids.add_bos = vocab.add_bos.value_or(true);
    return std::make_unique<SpmTokenizer>(vocab, std::move(label), ids);
  }
  if (vocab.model == "gpt2") {
    // llama.cpp warns and falls back to "default" for files written before the key existed.
    const std::string pre_name = vocab.pre.value_or("default");
    auto pre = BpePreTokenizer::create(pre_name);
    if (!pre) {
      throw FormatError(
          label + ": key 'tokenizer.ggml.pre' = '" + pre_name +
          "' is not a supported pre-tokenizer (supported: " + BpePreTokenizer::supported_names() + ")");
    }
    ids.bos = special_id(vocab.bos_id, 11, n, label, "tokenizer.ggml.bos_token_id");
    ids.eos = special_id(vocab.eos_id, 11, n, label, "tokenizer.ggml.eos_token_id");
    ids.add_bos = vocab.add_bos.value_or(pre->add_bos());
    return std::make_unique<BpeTokenizer>(vocab, std::move(label), ids, std::move(pre), pre_name);
  }
  if (vocab.model.empty())
    throw FormatError(label + ": key 'tokenizer.ggml.model' is missing (the file has no tokenizer)");
  throw FormatError(
      label + ": key 'tokenizer.ggml.model' = '" + vocab.model +
      "' is not a supported tokenizer (supported: llama (SentencePiece), gpt2 (byte-level BPE))");
}

}  // namespace kvcache::llama
