// A from-scratch float Llama forward pass for llama2.c checkpoints, the oracle for the runtime.
// Deliberately independent of the runtime and of kvcache: its own file parsing (trusting the file),
// dense per-layer K/V arrays indexed by absolute position, its own RoPE, straightforward loops.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace kvcache::llama::test {

class ReferenceLlama {
 public:
  explicit ReferenceLlama(const std::filesystem::path& checkpoint);
  /// Feeds `token` at the next position (0, 1, ...) and returns the next-token logits.
  std::vector<float> forward(int token);
  int vocab_size() const { return vocab_; }

 private:
  int dim_ = 0, hidden_ = 0, layers_ = 0, heads_ = 0, kv_heads_ = 0, vocab_ = 0, seq_len_ = 0;
  std::vector<float> w_;  ///< every float after the header
  // Offsets into w_ of each tensor (llama2.c order).
  std::size_t emb_ = 0, rms_att_ = 0, wq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0, rms_ffn_ = 0, w1_ = 0, w2_ = 0,
              w3_ = 0, rms_final_ = 0, wcls_ = 0;
  std::vector<std::vector<float>> keys_, values_;  ///< [layer][pos * kv_dim + i], rotated keys
  int pos_ = 0;                                    ///< position of the next token
};

}  // namespace kvcache::llama::test
