// The transformer layers of the Llama forward pass over a batch of activation rows, shared by
// Decoder (a prompt batch of one stream) and DecodeBatch (one token of each of many streams).
// Rows are independent everywhere except in attention, which the caller supplies: the matrix
// products run over all rows at once (each weight row is read once per batch), and every row gets
// exactly the arithmetic it would get alone (weight_matmul's per-row results do not depend on the
// batch size), so batching changes no logit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "llama/model_weights.h"
#include "llama/weight_matmul.h"

namespace kvcache::llama {

/// Scratch activations for up to max_rows rows, allocated once (no allocation while decoding).
/// Row r of a buffer of width w is [r * w, (r + 1) * w).
struct ActivationBuffers {
  ActivationBuffers(const ModelConfig& c, std::uint32_t max_rows);

  std::uint32_t max_rows;
  std::vector<float> x;    ///< [rows][dim] residual stream
  std::vector<float> xb;   ///< [rows][dim] normalised input of a sub-layer
  std::vector<float> xb2;  ///< [rows][dim] sub-layer output
  std::vector<float> q;    ///< [rows][dim] queries (pre-RoPE)
  std::vector<float> k;    ///< [rows][kv_dim] keys (pre-RoPE)
  std::vector<float> v;    ///< [rows][kv_dim] values
  std::vector<float> att;  ///< [rows][dim] attention output
  std::vector<float> hb;   ///< [rows][hidden] gate, then SwiGLU
  std::vector<float> hb2;  ///< [rows][hidden] up projection
  MatmulScratch matmul;    ///< quantised activations of the Q-type products
};

/// Attention of one layer for the rows of a pass: reads n rows of keys, values and queries
/// (buffers.k, .v, .q), stores the keys and values in the rows' caches and writes n rows of
/// attention output to buffers.att.
class RowAttention {
 public:
  virtual void attend(std::uint32_t layer, ActivationBuffers& buffers, std::uint32_t n) = 0;

 protected:
  ~RowAttention() = default;
};

/// Runs every layer of `model` over rows [0, n) of buffers.x (embedded tokens on entry, the final
/// residual stream on return). n must be in [1, buffers.max_rows]; the caller has already made
/// room in its caches (StreamCache::begin), so nothing here throws except the attention's own
/// errors.
void run_layers(const ModelWeights& model, ActivationBuffers& buffers, std::uint32_t n,
                RowAttention& attention);

/// Logits of n rows of the final residual stream `x` ([n][dim]) into `logits` ([n][vocab]):
/// final RMSNorm then the classifier, over all rows at once. `normed` ([n][dim]) is scratch.
void classify_rows(const ModelWeights& model, std::span<const float> x, std::uint32_t n,
                   std::span<float> normed, std::span<float> logits, MatmulScratch& scratch);

}  // namespace kvcache::llama
