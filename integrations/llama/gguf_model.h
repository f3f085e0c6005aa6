// A GGUF file (llama.cpp's format) as the model the Decoder runs, weights left in place in the
// memory-mapped file in their own type.
#pragma once

#include <memory>

#include "llama/gguf_file.h"
#include "llama/model_weights.h"

namespace kvcache::llama {

/// Reads the hyper-parameters of `general.architecture` (llama or qwen2) from `<arch>.*` keys and
/// views every tensor llama.cpp names for that architecture:
///   keys: block_count, embedding_length, feed_forward_length, attention.head_count,
///     attention.head_count_kv (default head_count), attention.layer_norm_rms_epsilon,
///     context_length, rope.freq_base (default 10000), rope.dimension_count (default and only
///     supported value: head_dim), vocab_size (default: the tokenizer.ggml.tokens count, else the
///     rows of token_embd.weight);
///   tensors: token_embd.weight, output_norm.weight, output.weight (absent: tied to the
///     embedding), rope_freqs.weight (optional, Llama 3 frequency factors), and per block N
///     blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
///     ffn_down}.weight, plus blk.N.attn_{q,k,v}.bias (required by qwen2, used by llama when
///     present).
/// Every tensor's shape is checked against the hyper-parameters; matrices stay in the file in
/// their type (any GgmlType), 1-D tensors (norms, biases, frequency factors) are converted to f32.
/// The result keeps `file` alive.
///
/// Throws kvcache::FormatError naming the file and the key or tensor: an unknown architecture
/// (the message lists the supported ones), a missing or mistyped key or tensor, a shape that does
/// not match, inconsistent hyper-parameters (head_count not dividing embedding_length, head_count
/// not a multiple of head_count_kv, an odd head size, rope.dimension_count != head size: partial
/// rotary embeddings are not supported), non-finite norms or frequency factors.
std::shared_ptr<const ModelWeights> load_gguf_model(std::shared_ptr<const GgufFile> file);

}  // namespace kvcache::llama
