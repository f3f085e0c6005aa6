#include "llama/decode_batch.h"

#include <algorithm>
#include <string>

#include "kvcache/error.h"

namespace kvcache::llama {

// Attention of the batch: row t is one token of running_[t]'s stream, stored in and attending
// over that stream's cache.
class DecodeBatch::RowsAttention final : public RowAttention {
 public:
  explicit RowsAttention(std::span<Decoder* const> rows) : rows_(rows) {}
  void attend(std::uint32_t il, ActivationBuffers& b, std::uint32_t n) override {
    for (std::uint32_t t = 0; t < n; ++t) {
      Decoder& d = *rows_[t];
      const std::size_t dim = d.config().dim, kv_dim = d.config().kv_dim();
      d.cache_.append(il, std::span(b.k).subspan(t * kv_dim, kv_dim),
                      std::span(b.v).subspan(t * kv_dim, kv_dim));
      d.attend_token(il, std::span(b.q).subspan(t * dim, dim), std::span(b.att).subspan(t * dim, dim), -1);
    }
  }

 private:
  std::span<Decoder* const> rows_;
};

DecodeBatch::DecodeBatch(std::shared_ptr<const ModelWeights> model, std::uint32_t max_rows)
    : model_(model ? std::move(model) : throw InvalidArgument("DecodeBatch: no model")),
      buffers_(model_->config,
               max_rows > 0 ? max_rows : throw InvalidArgument("DecodeBatch: max_rows must be >= 1")),
      logits_(std::size_t{max_rows} * model_->config.vocab_size) {
  running_.reserve(max_rows);
  row_of_.reserve(max_rows);
}

void DecodeBatch::step(std::span<Decoder* const> decoders, std::span<const std::int32_t> tokens,
                       std::span<std::exception_ptr> errors) {
  const std::size_t n = decoders.size();
  if (tokens.size() != n || errors.size() != n) {
    throw InvalidArgument("DecodeBatch::step: " + std::to_string(n) + " decoders, " +
                          std::to_string(tokens.size()) + " tokens and " + std::to_string(errors.size()) +
                          " error slots (they must be equal)");
  }
  if (n > max_rows()) {
    throw InvalidArgument("DecodeBatch::step: " + std::to_string(n) + " rows, at most " +
                          std::to_string(max_rows()));
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (decoders[i] == nullptr)
      throw InvalidArgument("DecodeBatch::step: decoder " + std::to_string(i) + " is null");
    if (&decoders[i]->weights() != model_.get())
      throw InvalidArgument("DecodeBatch::step: decoder " + std::to_string(i) + " runs another model");
    if (std::find(decoders.begin(), decoders.begin() + static_cast<std::ptrdiff_t>(i), decoders[i]) !=
        decoders.begin() + static_cast<std::ptrdiff_t>(i))
      throw InvalidArgument("DecodeBatch::step: decoder " + std::to_string(i) + " appears twice");
  }

  // Start every row (the only step that can fail); a row that fails leaves its decoder untouched.
  const std::size_t dim = model_->config.dim;
  running_.clear();
  row_of_.assign(n, -1);
  for (std::size_t i = 0; i < n; ++i) {
    errors[i] = nullptr;
    try {
      Decoder& d = *decoders[i];
      d.check_token(tokens[i]);
      d.cache_.begin(std::span(&tokens[i], 1));
      model_->embed(tokens[i], std::span(buffers_.x).subspan(running_.size() * dim, dim));
      row_of_[i] = static_cast<std::int64_t>(running_.size());
      running_.push_back(&d);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  if (running_.empty()) return;

  const auto rows = static_cast<std::uint32_t>(running_.size());
  RowsAttention attention(running_);
  run_layers(*model_, buffers_, rows, attention);
  classify_rows(*model_, buffers_.x, rows, buffers_.xb, logits_, buffers_.matmul);
}

std::span<const float> DecodeBatch::logits(std::size_t i) const {
  if (i >= row_of_.size()) {
    throw InvalidArgument("DecodeBatch::logits: row " + std::to_string(i) + " of a batch of " +
                          std::to_string(row_of_.size()));
  }
  if (row_of_[i] < 0) return {};
  const std::size_t vocab = model_->config.vocab_size;
  return std::span(logits_).subspan(static_cast<std::size_t>(row_of_[i]) * vocab, vocab);
}

}  // namespace kvcache::llama
