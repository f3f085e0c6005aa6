// Loading of llama2.c checkpoints ("legacy" export format, version 0).
//
// Layout: 7 int32 header fields (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len), then f32 tensors in this order: token_embedding [vocab][dim], rms_att [L][dim],
// wq [L][dim][dim], wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim],
// w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
// freq_cis_real and freq_cis_imag [seq_len][head_dim/2] (unused: the cache applies RoPE),
// then wcls [vocab][dim] only when vocab_size is negative (a positive vocab_size means the
// classifier is the embedding table). Matrices are row-major [out][in].
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "llama/model_config.h"
#include "llama/model_weights.h"

namespace kvcache::llama {

/// Tensors of one transformer block in llama2.c's naming; views into the Checkpoint that returned
/// them.
struct CheckpointLayer {
  std::span<const float> rms_att;  ///< [dim]
  std::span<const float> wq;       ///< [dim][dim]
  std::span<const float> wk;       ///< [kv_dim][dim]
  std::span<const float> wv;       ///< [kv_dim][dim]
  std::span<const float> wo;       ///< [dim][dim]
  std::span<const float> rms_ffn;  ///< [dim]
  std::span<const float> w1;       ///< [hidden][dim] (gate)
  std::span<const float> w2;       ///< [dim][hidden] (down)
  std::span<const float> w3;       ///< [hidden][dim] (up)
};

/// An immutable, fully validated checkpoint held in memory (read once: a memory map would share
/// pages between processes, but a file truncated by another process while mapped raises SIGBUS,
/// and these files are small). Thread safe to read from any number of threads; share it between
/// decoders with a shared_ptr<const Checkpoint>.
class Checkpoint {
 public:
  /// Loads and validates `path`. The config is validated (every field > 0, dim = n_heads *
  /// head_dim, head_dim even, n_heads a multiple of n_kv_heads) and llama2.c's fixed choices
  /// filled in: architecture llama, adjacent-pair RoPE with theta 10000, RMS epsilon 1e-5. Every size is
  /// checked against the file length before any weight is read. Throws kvcache::FormatError naming the file
  /// and the field for a truncated, garbled or hostile file (bad header field, size mismatch, trailing bytes,
  /// non-finite weight), and kvcache::Error when the file cannot be opened.
  static std::shared_ptr<const Checkpoint> load(const std::filesystem::path& path);

  const ModelConfig& config() const noexcept { return config_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  /// [vocab][dim]
  std::span<const float> token_embedding() const noexcept { return token_embedding_; }
  /// Weights of layer `il` < n_layers (asserted).
  const CheckpointLayer& layer(std::uint32_t il) const;
  /// [dim]
  std::span<const float> rms_final() const noexcept { return rms_final_; }
  /// [vocab][dim]: the embedding table when shared_classifier.
  std::span<const float> classifier() const noexcept { return classifier_; }
  /// Bytes of weights held.
  std::size_t weight_bytes() const noexcept { return data_.size() * sizeof(float); }

 private:
  // Passkey: only load() can construct, yet std::make_shared can call the public constructor.
  struct Key {
    explicit Key() = default;
  };

 public:
  explicit Checkpoint(Key) {}

 private:
  std::filesystem::path path_;  ///< where it was loaded from (for messages)
  ModelConfig config_;          ///< validated header
  std::vector<float> data_;     ///< every float after the header, in file order
  std::span<const float> token_embedding_, rms_final_, classifier_;  ///< views into data_
  std::vector<CheckpointLayer> layers_;                              ///< views into data_, one per layer
};

/// The checkpoint as the model the Decoder runs: f32 WeightMatrix views into its buffer (which the
/// result keeps alive), tensor types "f32" for every tensor, format "llama2.c".
std::shared_ptr<const ModelWeights> checkpoint_weights(std::shared_ptr<const Checkpoint> checkpoint);

}  // namespace kvcache::llama
