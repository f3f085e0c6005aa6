// A from-scratch float forward pass of a llama / qwen2 block stack over f32 weights named as in
// GGUF, the oracle for GGUF models. Independent of the runtime and of kvcache, like
// reference_llama.h: dense K/V arrays by absolute position, its own RoPE for both styles (adjacent
// pairs for llama, NEOX half split for qwen2) with optional frequency factors, Q/K/V biases,
// double accumulation.
#pragma once

#include <string>
#include <vector>

#include "tiny_model.h"

namespace kvcache::llama::test {

class ReferenceTransformer {
 public:
  /// `w` must outlive the reference.
  ReferenceTransformer(const TinySpec& spec, const TinyWeights& w);
  /// Feeds `token` at the next position and returns the next-token logits.
  std::vector<float> forward(int token);

 private:
  const TinySpec spec_;
  const TinyWeights& w_;
  std::vector<std::vector<double>> keys_, values_;  ///< [layer][pos * kv_dim + i], keys rotated
  int pos_ = 0;
};

}  // namespace kvcache::llama::test
