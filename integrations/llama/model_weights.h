// The weights a Decoder runs on, independent of the file format: matrices as WeightMatrix views
// in their own ggml type (f32 views into a llama2.c Checkpoint's buffer, or tensors left in place
// in a memory-mapped GGUF file), f32 norms and optional Q/K/V biases.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "llama/ggml_type.h"
#include "llama/model_config.h"

namespace kvcache::llama {

/// Weights of one transformer block. Matrices are [out][in] (a row per output); the spans are
/// f32. Biases are empty when the architecture has none (llama) and present for qwen2.
struct LayerWeights {
  std::span<const float> attn_norm;  ///< [dim] RMSNorm before attention
  WeightMatrix wq;                   ///< [dim][dim]
  WeightMatrix wk;                   ///< [kv_dim][dim]
  WeightMatrix wv;                   ///< [kv_dim][dim]
  WeightMatrix wo;                   ///< [dim][dim]
  std::span<const float> bq;         ///< [dim] or empty
  std::span<const float> bk;         ///< [kv_dim] or empty
  std::span<const float> bv;         ///< [kv_dim] or empty
  std::span<const float> ffn_norm;   ///< [dim] RMSNorm before the FFN
  WeightMatrix ffn_gate;             ///< [hidden][dim] (llama2.c w1)
  WeightMatrix ffn_up;               ///< [hidden][dim] (llama2.c w3)
  WeightMatrix ffn_down;             ///< [dim][hidden] (llama2.c w2)
};

/// A complete, validated model: hyper-parameters and views of every weight. Built by a loader
/// (checkpoint_weights() for llama2.c, load_gguf_model() for GGUF, open_model_weights() for
/// either); immutable afterwards, thread safe to read, shared between decoders with
/// shared_ptr<const ModelWeights>.
///
/// Ownership: the views point into `storage` (the Checkpoint or the GgufFile) and `owned`
/// (norms and biases converted to f32 at load time), both kept alive by this object.
struct ModelWeights {
  ModelWeights() = default;
  // Views may point into `owned`: a copy would point into the original.
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  ModelConfig config;
  std::filesystem::path path;          ///< the file it was loaded from (for messages and reports)
  std::string format;                  ///< "llama2.c" or "gguf"
  WeightMatrix token_embedding;        ///< [vocab][dim]; rows are dequantised on lookup (embed())
  std::vector<LayerWeights> layers;    ///< n_layers blocks
  std::span<const float> output_norm;  ///< [dim] final RMSNorm
  WeightMatrix output;  ///< [vocab][dim] classifier; the same view as token_embedding when tied
  /// Number of the file's tensors of each type (what a report calls the model's types: a Q4_K_M
  /// file shows q4_K and q6_K matrices beside f32 norms).
  std::map<GgmlType, std::uint32_t> tensor_types;
  std::shared_ptr<const void> storage;    ///< keeps the mapped file or checkpoint alive
  std::vector<std::vector<float>> owned;  ///< f32 copies the spans may point into

  /// Writes row `token` of the embedding as dim f32 values into `out` (out.size() == dim,
  /// token < vocab_size; both asserted: the Decoder checks token ids first).
  void embed(std::int32_t token, std::span<float> out) const;
  /// Bytes of weights the matrices and norms occupy in their stored types.
  std::size_t weight_bytes() const;
  /// Bytes of the matrices one decode step reads in their stored types: the seven matrices of
  /// every layer and the classifier (output.weight, or the embedding when tied; counted once).
  /// Norms, biases and the one embedding row looked up are left out (under 0.1% for real shapes).
  std::size_t step_matrix_bytes() const;
  /// "q8_0 x169, f32 x65": the tensor types by count, most frequent first.
  std::string tensor_type_summary() const;
};

}  // namespace kvcache::llama
