#include "llama/model.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <string>

#include "kvcache/calibration.h"
#include "kvcache/error.h"
#include "kvcache/page_pool.h"
#include "llama/layer_attention.h"
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

// out = weight * x / rms(x), RMSNorm with the epsilon inside the square root (llama2.c, llama.cpp).
void rmsnorm(std::span<float> out, std::span<const float> x, std::span<const float> weight, float eps) {
  float ss = 0.f;
  for (float v : x) ss += v * v;
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(x.size()) + eps);
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = weight[i] * (inv * x[i]);
}

// Adds `bias` to each bias.size()-long row of `y` (nothing when the model has no bias).
void add_bias(std::span<float> y, std::span<const float> bias) {
  if (bias.empty()) return;
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += bias[i % bias.size()];
}

}  // namespace

void Decoder::project(const WeightMatrix& w, std::span<const float> x, std::uint32_t n, std::span<float> y) {
  weight_matmul(w, x, n, y, matmul_scratch_);
}

Decoder::Decoder(std::shared_ptr<const ModelWeights> model, const CacheOptions& options)
    : model_(std::move(model)),
      attention_(options.attention),
      cache_(make_pool(stream_config(model_->config, options), options),
             stream_config(model_->config, options)),
      calibrate_beta_(options.calibrate_beta) {
  const ModelConfig& c = model_->config;
  if (!(options.calibrate_beta > 0.f && options.calibrate_beta <= 1.f)) {
    throw InvalidArgument("calibration beta must be in (0, 1] (1 = off)");
  }
  if (wants_detector(options)) detector_.emplace(c.n_layers, c.n_heads, options.detector);
  const std::size_t B = kMaxBatch;
  x_.resize(B * c.dim);
  xb_.resize(B * c.dim);
  xb2_.resize(B * c.dim);
  q_.resize(B * c.dim);
  k_.resize(B * c.kv_dim());
  v_.resize(B * c.kv_dim());
  att_.resize(B * c.dim);
  hb_.resize(B * c.hidden_dim);
  hb2_.resize(B * c.hidden_dim);
  logits_.resize(c.vocab_size);
  // The widest activation row a product reads, rounded up to whole Q8 blocks: no allocation later.
  matmul_scratch_.reserve(B, (std::max(c.dim, c.hidden_dim) + 31) / 32 * 32);
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

void Decoder::classify(std::span<const float> x, std::span<float> logits) {
  const ModelConfig& c = config();
  std::span<float> xn = std::span(xb_).first(c.dim);
  rmsnorm(xn, x, model_->output_norm, c.rms_eps);
  project(model_->output, xn, 1, logits);
}

void Decoder::forward(std::span<const std::int32_t> tokens, std::vector<float>* all_logits,
                      std::size_t row0) {
  const ModelConfig& c = config();
  const auto n = static_cast<std::uint32_t>(tokens.size());
  assert(n >= 1 && n <= kMaxBatch);
  for (std::int32_t t : tokens) {
    if (t < 0 || static_cast<std::uint32_t>(t) >= c.vocab_size) {
      throw InvalidArgument("token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                            std::to_string(c.vocab_size) + ")");
    }
  }
  const std::uint32_t dim = c.dim, kv_dim = c.kv_dim(), hidden = c.hidden_dim;
  auto rows = [](std::vector<float>& buf, std::uint32_t n_rows, std::uint32_t width) {
    return std::span(buf).first(std::size_t{n_rows} * width);
  };
  auto row = [](std::vector<float>& buf, std::uint32_t r, std::uint32_t width) {
    return std::span(buf).subspan(std::size_t{r} * width, width);
  };

  cache_.begin(tokens);  // may throw PoolExhausted: nothing has been changed yet
  for (std::uint32_t t = 0; t < n; ++t) model_->embed(tokens[t], row(x_, t, dim));
  // With no eviction in the batch, token t of the batch sits at cache index n_kept - n + t; a
  // single token is simply the newest.
  const std::int64_t first_index = n == 1 ? -1 : static_cast<std::int64_t>(cache_.n_kept()) - n;

  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    const LayerWeights& w = model_->layers[il];
    // Attention block.
    for (std::uint32_t t = 0; t < n; ++t) rmsnorm(row(xb_, t, dim), row(x_, t, dim), w.attn_norm, c.rms_eps);
    project(w.wq, rows(xb_, n, dim), n, rows(q_, n, dim));
    project(w.wk, rows(xb_, n, dim), n, rows(k_, n, kv_dim));
    project(w.wv, rows(xb_, n, dim), n, rows(v_, n, kv_dim));
    add_bias(rows(q_, n, dim), w.bq);
    add_bias(rows(k_, n, kv_dim), w.bk);
    add_bias(rows(v_, n, kv_dim), w.bv);
    cache_.append(il, rows(k_, n, kv_dim), rows(v_, n, kv_dim));
    for (std::uint32_t t = 0; t < n; ++t) {
      AttendOptions opt;
      opt.n_heads = c.n_heads;
      opt.query_index = n == 1 ? -1 : first_index + t;
      if (detector_) {
        // Single steps only (prefill runs one token at a time with a detector): the detector
        // reads the newest query's attention over every kept token.
        mass_.resize(std::size_t{c.n_heads} * cache_.n_kept());
        layer_attention(attention_, cache_, il, row(q_, t, dim), row(att_, t, dim), mass_, opt);
        detector_->observe(cache_, il, mass_);
        if (calibrate_beta_ < 1.f)
          calibrated_ += calibrate_sinks(cache_, *detector_, il, calibrate_beta_, row(att_, t, dim), mass_);
        if (observer_) observer_(il, mass_);  // after calibration: the attention actually applied
      } else {
        layer_attention(attention_, cache_, il, row(q_, t, dim), row(att_, t, dim), {}, opt);
      }
    }
    project(w.wo, rows(att_, n, dim), n, rows(xb2_, n, dim));
    for (std::size_t i = 0; i < std::size_t{n} * dim; ++i) x_[i] += xb2_[i];

    // SwiGLU feed-forward block: w2(silu(w1 x) * w3 x).
    for (std::uint32_t t = 0; t < n; ++t) rmsnorm(row(xb_, t, dim), row(x_, t, dim), w.ffn_norm, c.rms_eps);
    project(w.ffn_gate, rows(xb_, n, dim), n, rows(hb_, n, hidden));
    project(w.ffn_up, rows(xb_, n, dim), n, rows(hb2_, n, hidden));
    for (std::size_t i = 0; i < std::size_t{n} * hidden; ++i) {
      const float g = hb_[i];
      hb_[i] = g / (1.0f + std::exp(-g)) * hb2_[i];
    }
    project(w.ffn_down, rows(hb_, n, hidden), n, rows(xb2_, n, dim));
    for (std::size_t i = 0; i < std::size_t{n} * dim; ++i) x_[i] += xb2_[i];
  }

  if (all_logits != nullptr) {
    for (std::uint32_t t = 0; t < n; ++t) {
      classify(row(x_, t, dim), std::span(*all_logits).subspan((row0 + t) * c.vocab_size, c.vocab_size));
    }
  }
  classify(row(x_, n - 1, dim), logits_);
}

}  // namespace kvcache::llama
