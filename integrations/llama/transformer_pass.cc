#include "llama/transformer_pass.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace kvcache::llama {
namespace {

// Row operations: the same arithmetic whatever the batch (see the header).
/// out = weight * x / rms(x), RMSNorm with the epsilon inside the square root (llama2.c, llama.cpp).
void rmsnorm(std::span<float> out, std::span<const float> x, std::span<const float> weight, float eps) {
  float ss = 0.f;
  for (float v : x) ss += v * v;
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(x.size()) + eps);
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = weight[i] * (inv * x[i]);
}

/// Adds `bias` to each bias.size()-long row of `y` (nothing when the model has no bias).
void add_bias(std::span<float> y, std::span<const float> bias) {
  if (bias.empty()) return;
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += bias[i % bias.size()];
}

/// gate = silu(gate) * up, element-wise (SwiGLU).
void swiglu(std::span<float> gate, std::span<const float> up) {
  for (std::size_t i = 0; i < gate.size(); ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

/// x += y, element-wise (the residual connection).
void add_residual(std::span<float> x, std::span<const float> y) {
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
}

std::span<float> rows(std::vector<float>& buf, std::uint32_t n_rows, std::uint32_t width) {
  return std::span(buf).first(std::size_t{n_rows} * width);
}
std::span<float> row(std::vector<float>& buf, std::uint32_t r, std::uint32_t width) {
  return std::span(buf).subspan(std::size_t{r} * width, width);
}

}  // namespace

ActivationBuffers::ActivationBuffers(const ModelConfig& c, std::uint32_t rows_max)
    : max_rows(rows_max),
      x(std::size_t{rows_max} * c.dim),
      xb(std::size_t{rows_max} * c.dim),
      xb2(std::size_t{rows_max} * c.dim),
      q(std::size_t{rows_max} * c.dim),
      k(std::size_t{rows_max} * c.kv_dim()),
      v(std::size_t{rows_max} * c.kv_dim()),
      att(std::size_t{rows_max} * c.dim),
      hb(std::size_t{rows_max} * c.hidden_dim),
      hb2(std::size_t{rows_max} * c.hidden_dim) {
  // The widest activation row a product reads, rounded up to whole Q8 blocks.
  matmul.reserve(rows_max, (std::max(c.dim, c.hidden_dim) + 31) / 32 * 32);
}

void run_layers(const ModelWeights& model, ActivationBuffers& b, std::uint32_t n, RowAttention& attention) {
  assert(n >= 1 && n <= b.max_rows);
  const ModelConfig& c = model.config;
  const std::uint32_t dim = c.dim, kv_dim = c.kv_dim(), hidden = c.hidden_dim;
  auto project = [&](const WeightMatrix& w, std::span<const float> x, std::span<float> y) {
    weight_matmul(w, x, n, y, b.matmul);
  };
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    const LayerWeights& w = model.layers[il];
    // Attention block.
    for (std::uint32_t t = 0; t < n; ++t)
      rmsnorm(row(b.xb, t, dim), row(b.x, t, dim), w.attn_norm, c.rms_eps);
    const WeightProduct qkv[] = {
        {w.wq, rows(b.q, n, dim)}, {w.wk, rows(b.k, n, kv_dim)}, {w.wv, rows(b.v, n, kv_dim)}};
    weight_matmuls(qkv, rows(b.xb, n, dim), n, b.matmul);
    add_bias(rows(b.q, n, dim), w.bq);
    add_bias(rows(b.k, n, kv_dim), w.bk);
    add_bias(rows(b.v, n, kv_dim), w.bv);
    attention.attend(il, b, n);
    project(w.wo, rows(b.att, n, dim), rows(b.xb2, n, dim));
    add_residual(rows(b.x, n, dim), rows(b.xb2, n, dim));

    // SwiGLU feed-forward block: w2(silu(w1 x) * w3 x).
    for (std::uint32_t t = 0; t < n; ++t) rmsnorm(row(b.xb, t, dim), row(b.x, t, dim), w.ffn_norm, c.rms_eps);
    const WeightProduct gate_up[] = {{w.ffn_gate, rows(b.hb, n, hidden)}, {w.ffn_up, rows(b.hb2, n, hidden)}};
    weight_matmuls(gate_up, rows(b.xb, n, dim), n, b.matmul);
    swiglu(rows(b.hb, n, hidden), rows(b.hb2, n, hidden));
    project(w.ffn_down, rows(b.hb, n, hidden), rows(b.xb2, n, dim));
    add_residual(rows(b.x, n, dim), rows(b.xb2, n, dim));
  }
}

void classify_rows(const ModelWeights& model, std::span<const float> x, std::uint32_t n,
                   std::span<float> normed, std::span<float> logits, MatmulScratch& scratch) {
  const std::size_t dim = model.config.dim;
  for (std::size_t t = 0; t < n; ++t) {
    rmsnorm(normed.subspan(t * dim, dim), x.subspan(t * dim, dim), model.output_norm, model.config.rms_eps);
  }
  weight_matmul(model.output, normed.first(n * dim), n,
                logits.first(n * std::size_t{model.config.vocab_size}), scratch);
}

}  // namespace kvcache::llama
