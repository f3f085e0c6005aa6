// The hyper-parameters of a decoder model, whatever file it came from (llama2.c checkpoint or
// GGUF): what the Decoder needs to size its buffers, its cache and its RoPE.
#pragma once

#include <cstdint>
#include <string_view>

#include "kvcache/rope.h"

namespace kvcache::llama {

/// The model families the runtime runs. They share the Llama block (RMSNorm, attention with
/// RoPE and GQA, SwiGLU FFN); they differ in RoPE style and Q/K/V biases (see ModelConfig).
enum class Architecture : std::uint8_t {
  llama,  ///< Llama 2/3, TinyLlama, SmolLM, Mistral (no sliding window), llama2.c checkpoints
  qwen2,  ///< Qwen2 / Qwen2.5: Q/K/V biases, NEOX (half-split) RoPE
};

/// "llama", "qwen2" (GGUF's general.architecture spelling).
std::string_view architecture_name(Architecture arch);
/// The supported spellings, for error messages: "llama, qwen2".
std::string_view supported_architectures();

/// Model hyper-parameters. Loaders fill and validate them (every count > 0, dim = n_heads *
/// head_dim, head_dim even, n_heads a multiple of n_kv_heads, rope.freq_factors empty or
/// head_dim / 2 values, rms_eps > 0), so code reading a ModelConfig may rely on that.
struct ModelConfig {
  Architecture arch = Architecture::llama;
  std::uint32_t dim = 0;          ///< residual stream width (GGUF embedding_length)
  std::uint32_t hidden_dim = 0;   ///< FFN inner width (feed_forward_length)
  std::uint32_t n_layers = 0;     ///< transformer blocks (block_count)
  std::uint32_t n_heads = 0;      ///< query heads (attention.head_count)
  std::uint32_t n_kv_heads = 0;   ///< key/value heads, GQA when < n_heads (attention.head_count_kv)
  std::uint32_t vocab_size = 0;   ///< rows of the embedding and output matrices
  std::uint32_t seq_len = 0;      ///< trained context length (informational: streaming goes past it)
  bool shared_classifier = true;  ///< the output matrix is the token embedding (tied weights)
  /// RoPE as the cache applies it: llama rotates adjacent pairs (llama.cpp's LLAMA_ROPE_TYPE_NORM;
  /// HF conversions permute the Q/K weights for it), qwen2 the NEOX half split; theta from
  /// rope.freq_base; Llama 3 frequency factors from rope_freqs.weight.
  RopeConfig rope{RopeStyle::adjacent_pairs, 10000.0};
  float rms_eps = 1e-5f;  ///< RMSNorm epsilon, inside the square root (attention.layer_norm_rms_epsilon)

  std::uint32_t head_dim() const { return dim / n_heads; }
  std::uint32_t kv_dim() const { return n_kv_heads * head_dim(); }
};

}  // namespace kvcache::llama
