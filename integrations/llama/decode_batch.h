// One decode step of many streams at once: the continuous-batching step of a server.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <vector>

#include "llama/model.h"
#include "llama/transformer_pass.h"

namespace kvcache::llama {

/// Feeds one token to each of several decoders in a single forward pass: every matrix product
/// runs over all the rows at once (each weight row is read from memory once per step, not once
/// per stream), while each row's keys, values and attention go through its own decoder's cache
/// (and detector). A row's logits are bit-identical to what Decoder::step would return for it,
/// because every per-row operation is the same arithmetic whatever the batch (weight_matmul's rows
/// do not depend on the batch size; see transformer_pass.h).
///
/// Ownership: shares the weights; owns scratch for max_rows rows, allocated once.
/// Thread safety: one step() at a time per DecodeBatch; the decoders of a step must not be used
/// elsewhere during it. Matrix products may use oneTBB worker threads internally.
class DecodeBatch {
 public:
  /// Scratch for batches of up to max_rows streams (>= 1; InvalidArgument otherwise).
  DecodeBatch(std::shared_ptr<const ModelWeights> model, std::uint32_t max_rows);

  /// Feeds tokens[i] to decoders[i] for every i (equal sizes, at most max_rows, distinct
  /// decoders on this DecodeBatch's model; InvalidArgument otherwise, with nothing changed).
  /// A row that cannot start (a token outside the vocabulary, PoolExhausted from its cache) is
  /// left out of the pass and its exception stored in errors[i] (null for rows that ran): that
  /// decoder is unchanged, and the other rows run as if it had not been in the batch.
  /// The logits of row i are then logits(i), valid until the next step().
  void step(std::span<Decoder* const> decoders, std::span<const std::int32_t> tokens,
            std::span<std::exception_ptr> errors);

  /// Next-token logits (vocab_size floats) of row i of the last step (a row that failed: empty).
  std::span<const float> logits(std::size_t i) const;

  std::uint32_t max_rows() const noexcept { return buffers_.max_rows; }

 private:
  class RowsAttention;

  std::shared_ptr<const ModelWeights> model_;
  ActivationBuffers buffers_;
  std::vector<float> logits_;         ///< [max_rows][vocab] logits of the rows that ran, in order
  std::vector<Decoder*> running_;     ///< decoders of the rows that started, in batch order
  std::vector<std::int64_t> row_of_;  ///< batch index -> row in logits_ (-1: failed)
};

}  // namespace kvcache::llama
