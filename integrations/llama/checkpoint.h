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

namespace kvcache::llama {

/// Model hyper-parameters, validated (every field > 0, dim = n_heads * head_dim, head_dim even,
/// n_heads a multiple of n_kv_heads).
struct ModelConfig {
  std::uint32_t dim = 0;         ///< residual stream width
  std::uint32_t hidden_dim = 0;  ///< FFN inner width
  std::uint32_t n_layers = 0;
  std::uint32_t n_heads = 0;      ///< query heads
  std::uint32_t n_kv_heads = 0;   ///< key/value heads (GQA when < n_heads)
  std::uint32_t vocab_size = 0;   ///< absolute value of the header field
  std::uint32_t seq_len = 0;      ///< trained context length (informational: streaming goes past it)
  bool shared_classifier = true;  ///< header vocab_size > 0: logits use the embedding table

  std::uint32_t head_dim() const { return dim / n_heads; }
  std::uint32_t kv_dim() const { return n_kv_heads * head_dim(); }
};

/// Weights of one transformer block; views into the Checkpoint that returned them.
struct LayerWeights {
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
  /// Loads and validates `path`. Every size is checked against the file length before any weight
  /// is read. Throws kvcache::FormatError naming the file and the field for a truncated, garbled
  /// or hostile file (bad header field, size mismatch, trailing bytes, non-finite weight), and
  /// kvcache::Error when the file cannot be opened.
  static std::shared_ptr<const Checkpoint> load(const std::filesystem::path& path);

  const ModelConfig& config() const noexcept { return config_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  /// [vocab][dim]
  std::span<const float> token_embedding() const noexcept { return token_embedding_; }
  /// Weights of layer `il` < n_layers (asserted).
  const LayerWeights& layer(std::uint32_t il) const;
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
  std::vector<LayerWeights> layers_;                                 ///< views into data_, one per layer
};

}  // namespace kvcache::llama
