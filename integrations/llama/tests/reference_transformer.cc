#include "reference_transformer.h"

#include <algorithm>
#include <cmath>

namespace kvcache::llama::test {
namespace {

using Vec = std::vector<double>;

// y = W x + b for W stored [rows][cols].
Vec affine(const std::vector<float>& w, const Vec& x, const std::vector<float>* bias) {
  const std::size_t cols = x.size(), rows = w.size() / cols;
  Vec y(rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    double s = bias != nullptr ? (*bias)[r] : 0.0;
    for (std::size_t c = 0; c < cols; ++c) s += double{w[r * cols + c]} * x[c];
    y[r] = s;
  }
  return y;
}

Vec rmsnorm(const Vec& x, const std::vector<float>& g, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = g[i] * x[i] * inv;
  return out;
}

// Rotates each head of `v` by `pos`. neox: pairs (i, i + hd/2) (GPT-NeoX, llama.cpp
// LLAMA_ROPE_TYPE_NEOX); otherwise (2i, 2i+1). Pair i turns by pos * theta^(-2i/hd) / factor_i.
void rope(Vec& v, std::size_t hd, int pos, bool neox, double theta, const std::vector<float>* factors) {
  for (std::size_t h = 0; h < v.size() / hd; ++h) {
    double* x = v.data() + h * hd;
    for (std::size_t i = 0; i < hd / 2; ++i) {
      double angle = pos * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
      if (factors != nullptr) angle /= (*factors)[i];
      const std::size_t a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
      const double x0 = x[a], x1 = x[b];
      x[a] = x0 * std::cos(angle) - x1 * std::sin(angle);
      x[b] = x0 * std::sin(angle) + x1 * std::cos(angle);
    }
  }
}

}  // namespace

ReferenceTransformer::ReferenceTransformer(const TinySpec& spec, const TinyWeights& w)
    : spec_(spec), w_(w), keys_(spec.layers), values_(spec.layers) {}

std::vector<float> ReferenceTransformer::forward(int token) {
  const std::size_t d = spec_.dim, hd = d / spec_.heads, kv = spec_.kv_heads * hd;
  const std::size_t group = spec_.heads / spec_.kv_heads;
  const bool neox = spec_.arch == "qwen2";
  const std::vector<float>* factors = w_.has("rope_freqs.weight") ? &w_.at("rope_freqs.weight") : nullptr;
  const std::vector<float>& emb = w_.at("token_embd.weight");
  Vec x(emb.begin() + static_cast<std::ptrdiff_t>(token * d),
        emb.begin() + static_cast<std::ptrdiff_t>((token + 1) * d));
  for (std::uint32_t l = 0; l < spec_.layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    auto bias = [&](const char* name) { return w_.has(b + name) ? &w_.at(b + name) : nullptr; };
    Vec xb = rmsnorm(x, w_.at(b + "attn_norm.weight"), spec_.eps);
    Vec q = affine(w_.at(b + "attn_q.weight"), xb, bias("attn_q.bias"));
    Vec k = affine(w_.at(b + "attn_k.weight"), xb, bias("attn_k.bias"));
    Vec v = affine(w_.at(b + "attn_v.weight"), xb, bias("attn_v.bias"));
    rope(q, hd, pos_, neox, spec_.theta, factors);
    rope(k, hd, pos_, neox, spec_.theta, factors);
    keys_[l].insert(keys_[l].end(), k.begin(), k.end());
    values_[l].insert(values_[l].end(), v.begin(), v.end());
    Vec att(d, 0.0);
    const std::size_t n = static_cast<std::size_t>(pos_) + 1;
    for (std::size_t h = 0; h < spec_.heads; ++h) {
      const std::size_t kh = h / group;
      Vec score(n);
      for (std::size_t t = 0; t < n; ++t) {
        double s = 0;
        for (std::size_t i = 0; i < hd; ++i) s += q[h * hd + i] * keys_[l][t * kv + kh * hd + i];
        score[t] = s / std::sqrt(static_cast<double>(hd));
      }
      const double mx = *std::max_element(score.begin(), score.end());
      double sum = 0;
      for (double& s : score) sum += (s = std::exp(s - mx));
      for (std::size_t t = 0; t < n; ++t) {
        for (std::size_t i = 0; i < hd; ++i)
          att[h * hd + i] += score[t] / sum * values_[l][t * kv + kh * hd + i];
      }
    }
    const Vec o = affine(w_.at(b + "attn_output.weight"), att, nullptr);
    for (std::size_t i = 0; i < d; ++i) x[i] += o[i];
    xb = rmsnorm(x, w_.at(b + "ffn_norm.weight"), spec_.eps);
    Vec g = affine(w_.at(b + "ffn_gate.weight"), xb, nullptr);
    const Vec u = affine(w_.at(b + "ffn_up.weight"), xb, nullptr);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    const Vec f = affine(w_.at(b + "ffn_down.weight"), g, nullptr);
    for (std::size_t i = 0; i < d; ++i) x[i] += f[i];
  }
  x = rmsnorm(x, w_.at("output_norm.weight"), spec_.eps);
  ++pos_;
  const Vec logits = affine(w_.has("output.weight") ? w_.at("output.weight") : emb, x, nullptr);
  return std::vector<float>(logits.begin(), logits.end());
}

}  // namespace kvcache::llama::test
