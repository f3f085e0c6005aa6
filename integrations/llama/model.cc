#include "llama/model.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <string>

#include "kvcache/calibration.h"
#include "kvcache/error.h"
#include "kvcache/page_pool.h"
#include "llama/layer_attention.h"
#include "llama/transformer_pass.h"
#include "llama/weight_matmul.h"

namespace kvcache::llama {

namespace {

// A detector runs when a policy reads attention statistics or calibration is on.
bool wants_detector(const CacheOptions& o) {
  return o.force_detector || o.policy.kind == PolicyKind::hidden_sinks || o.policy.kind == PolicyKind::h2o ||
         o.calibrate_beta < 1.f;
}

StreamConfig stream_config(const ModelConfig& c, const CacheOptions& o) {
  StreamConfig s;
  s.n_layers = c.n_layers;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_dim();
  s.page_tokens = o.page_tokens;
  s.dtype = o.dtype;
  s.pinned_dtype = o.pinned_dtype;
  s.positions = o.positions;
  s.rope = c.rope;
  s.policy = o.policy;
  if (wants_detector(o))
    s.token_state_floats = SinkDetector(c.n_layers, c.n_heads, o.detector).state_floats();
  return s;
}

std::shared_ptr<PagePool> make_pool(const StreamConfig& s, const CacheOptions& o) {
  if (o.pool) return o.pool;  // StreamCache checks its page size
  PagePoolOptions p;
  p.page_bytes = s.layout().page_bytes();
  p.max_bytes = o.max_kv_bytes;
  return std::make_shared<PagePool>(p);
}

}  // namespace

Decoder::Decoder(std::shared_ptr<const ModelWeights> model, const CacheOptions& options)
    : model_(std::move(model)),
      attention_(options.attention),
      cache_(make_pool(stream_config(model_->config, options), options),
             stream_config(model_->config, options)),
      calibrate_beta_(options.calibrate_beta),
      buffers_(model_->config, kMaxBatch),
      logits_(model_->config.vocab_size) {
  const ModelConfig& c = model_->config;
  if (!(options.calibrate_beta > 0.f && options.calibrate_beta <= 1.f)) {
    throw InvalidArgument("calibration beta must be in (0, 1] (1 = off)");
  }
  if (wants_detector(options)) detector_.emplace(c.n_layers, c.n_heads, options.detector);
}

std::span<const float> Decoder::step(std::int32_t token) {
  forward(std::span(&token, 1), nullptr, 0);
  return logits_;
}

bool Decoder::is_sink(std::uint32_t index, std::uint32_t layer, std::uint32_t head) {
  if (!detector_) throw InvalidArgument("Decoder::is_sink: this decoder runs no sink detector");
  return detector_->is_sink(cache_, index, layer, head);
}

void Decoder::set_attention_observer(AttentionObserver observer) {
  if (observer && !detector_) {
    throw InvalidArgument(
        "Decoder::set_attention_observer: attention mass is only computed with a detector "
        "(set CacheOptions::force_detector)");
  }
  observer_ = std::move(observer);
}

std::span<const float> Decoder::prefill(std::span<const std::int32_t> tokens,
                                        std::vector<float>* all_logits) {
  if (tokens.empty()) throw InvalidArgument("Decoder::prefill: no tokens");
  if (all_logits != nullptr) all_logits->assign(tokens.size() * config().vocab_size, 0.f);
  std::size_t i = 0;
  while (i < tokens.size()) {
    // A batch is exact only if it evicts nothing (StreamCache plans eviction per batch), so it
    // may only fill the room left under the budget; once the cache is full, steps go one by one.
    const std::uint32_t budget = cache_.policy().budget(), kept = cache_.n_kept();
    // With a detector every query's attention is observed: one token at a time.
    const std::size_t room = detector_ ? 1 : (budget > kept ? budget - kept : 0);
    const std::size_t n =
        std::max<std::size_t>(1, std::min({tokens.size() - i, room, std::size_t{kMaxBatch}}));
    forward(tokens.subspan(i, n), all_logits, i);
    i += n;
  }
  return logits_;
}

void Decoder::check_token(std::int32_t token) const {
  const std::uint32_t vocab = config().vocab_size;
  if (token < 0 || static_cast<std::uint32_t>(token) >= vocab) {
    throw InvalidArgument("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                          std::to_string(vocab) + ")");
  }
}

void Decoder::attend_token(std::uint32_t il, std::span<const float> q, std::span<float> att,
                           std::int64_t query_index) {
  AttendOptions opt;
  opt.n_heads = config().n_heads;
  opt.query_index = query_index;
  if (!detector_) {
    layer_attention(attention_, cache_, il, q, att, {}, opt);
    return;
  }
  // Single steps only (prefill runs one token at a time with a detector): the detector reads the
  // newest query's attention over every kept token.
  mass_.resize(std::size_t{opt.n_heads} * cache_.n_kept());
  layer_attention(attention_, cache_, il, q, att, mass_, opt);
  detector_->observe(cache_, il, mass_);
  if (calibrate_beta_ < 1.f)
    calibrated_ += calibrate_sinks(cache_, *detector_, il, calibrate_beta_, att, mass_);
  if (observer_) observer_(il, mass_);  // after calibration: the attention actually applied
}

// Attention of a prompt batch (or a single token) of this decoder's stream.
class Decoder::BatchAttention final : public RowAttention {
 public:
  BatchAttention(Decoder& d, std::int64_t first_index) : d_(d), first_index_(first_index) {}
  void attend(std::uint32_t il, ActivationBuffers& b, std::uint32_t n) override {
    const std::size_t dim = d_.config().dim, kv_dim = d_.config().kv_dim();
    d_.cache_.append(il, std::span(b.k).first(n * kv_dim), std::span(b.v).first(n * kv_dim));
    for (std::uint32_t t = 0; t < n; ++t) {
      d_.attend_token(il, std::span(b.q).subspan(t * dim, dim), std::span(b.att).subspan(t * dim, dim),
                      n == 1 ? -1 : first_index_ + t);
    }
  }

 private:
  Decoder& d_;
  std::int64_t first_index_;  ///< cache index of the batch's first token (-1: a single token)
};

void Decoder::forward(std::span<const std::int32_t> tokens, std::vector<float>* all_logits,
                      std::size_t row0) {
  const ModelConfig& c = config();
  const auto n = static_cast<std::uint32_t>(tokens.size());
  assert(n >= 1 && n <= kMaxBatch);
  for (std::int32_t t : tokens) check_token(t);
  const std::size_t dim = c.dim, vocab = c.vocab_size;

  cache_.begin(tokens);  // may throw PoolExhausted: nothing has been changed yet
  for (std::uint32_t t = 0; t < n; ++t) model_->embed(tokens[t], std::span(buffers_.x).subspan(t * dim, dim));
  // With no eviction in the batch, token t of the batch sits at cache index n_kept - n + t; a
  // single token is simply the newest.
  BatchAttention attention(*this, n == 1 ? -1 : static_cast<std::int64_t>(cache_.n_kept()) - n);
  run_layers(*model_, buffers_, n, attention);

  if (all_logits != nullptr) {
    const std::span<float> out = std::span(*all_logits).subspan(row0 * vocab, n * vocab);
    classify_rows(*model_, buffers_.x, n, buffers_.xb, out, buffers_.matmul);
    std::copy(out.end() - static_cast<std::ptrdiff_t>(vocab), out.end(), logits_.begin());
  } else {
    classify_rows(*model_, std::span(buffers_.x).subspan((n - 1) * dim, dim), 1, buffers_.xb, logits_,
                  buffers_.matmul);
  }
}

}  // namespace kvcache::llama
