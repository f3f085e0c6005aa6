#include "reference_llama.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace kvcache::llama::test {
namespace {

// y = W x for W [rows][cols]
std::vector<float> matvec(const float* w, const std::vector<float>& x, int rows, int cols) {
  std::vector<float> y(static_cast<std::size_t>(rows), 0.f);
  for (int r = 0; r < rows; ++r) {
    float s = 0.f;
    for (int c = 0; c < cols; ++c)
      s += w[static_cast<std::size_t>(r) * cols + c] * x[static_cast<std::size_t>(c)];
    y[static_cast<std::size_t>(r)] = s;
  }
  return y;
}

std::vector<float> rmsnorm(const std::vector<float>& x, const float* weight) {
  double ss = 0;
  for (float v : x) ss += double{v} * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + 1e-5);
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(weight[i] * (inv * x[i]));
  return out;
}

// Rotates every (v[2i], v[2i+1]) pair of each head by pos * 10000^(-2i/head_size).
void rope(std::vector<float>& v, int head_size, int pos) {
  for (std::size_t i = 0; i + 1 < v.size(); i += 2) {
    const int pair = static_cast<int>(i % static_cast<std::size_t>(head_size));
    const double freq = std::pow(10000.0, -static_cast<double>(pair) / head_size);
    const double angle = pos * freq;
    const double c = std::cos(angle), s = std::sin(angle);
    const double a = v[i], b = v[i + 1];
    v[i] = static_cast<float>(a * c - b * s);
    v[i + 1] = static_cast<float>(a * s + b * c);
  }
}

}  // namespace

ReferenceLlama::ReferenceLlama(const std::filesystem::path& checkpoint) {
  std::ifstream in(checkpoint, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + checkpoint.string());
  std::int32_t h[7];
  in.read(reinterpret_cast<char*>(h), sizeof h);
  dim_ = h[0], hidden_ = h[1], layers_ = h[2], heads_ = h[3], kv_heads_ = h[4], vocab_ = std::abs(h[5]),
  seq_len_ = h[6];
  const auto size = std::filesystem::file_size(checkpoint);
  w_.resize((size - sizeof h) / sizeof(float));
  in.read(reinterpret_cast<char*>(w_.data()), static_cast<std::streamsize>(w_.size() * sizeof(float)));

  const std::size_t d = static_cast<std::size_t>(dim_), L = static_cast<std::size_t>(layers_),
                    hd = static_cast<std::size_t>(hidden_), V = static_cast<std::size_t>(vocab_);
  const std::size_t kv = static_cast<std::size_t>(kv_heads_) * (d / static_cast<std::size_t>(heads_));
  std::size_t off = 0;
  emb_ = off, off += V * d;
  rms_att_ = off, off += L * d;
  wq_ = off, off += L * d * d;
  wk_ = off, off += L * d * kv;
  wv_ = off, off += L * d * kv;
  wo_ = off, off += L * d * d;
  rms_ffn_ = off, off += L * d;
  w1_ = off, off += L * d * hd;
  w2_ = off, off += L * d * hd;
  w3_ = off, off += L * d * hd;
  rms_final_ = off, off += d;
  off += static_cast<std::size_t>(seq_len_) * (d / static_cast<std::size_t>(heads_));  // both RoPE tables
  wcls_ = h[5] > 0 ? emb_ : off;
  keys_.assign(L, {});
  values_.assign(L, {});
}

std::vector<float> ReferenceLlama::forward(int token) {
  const int head_size = dim_ / heads_, kv_dim = kv_heads_ * head_size, group = heads_ / kv_heads_;
  const std::size_t d = static_cast<std::size_t>(dim_);
  std::vector<float> x(
      w_.begin() + static_cast<std::ptrdiff_t>(emb_ + static_cast<std::size_t>(token) * d),
      w_.begin() + static_cast<std::ptrdiff_t>(emb_ + static_cast<std::size_t>(token + 1) * d));
  for (int l = 0; l < layers_; ++l) {
    const std::size_t lu = static_cast<std::size_t>(l);
    const std::size_t kvsz = d * static_cast<std::size_t>(kv_dim);
    std::vector<float> xb = rmsnorm(x, &w_[rms_att_ + lu * d]);
    std::vector<float> q = matvec(&w_[wq_ + lu * d * d], xb, dim_, dim_);
    std::vector<float> k = matvec(&w_[wk_ + lu * kvsz], xb, kv_dim, dim_);
    std::vector<float> v = matvec(&w_[wv_ + lu * kvsz], xb, kv_dim, dim_);
    rope(q, head_size, pos_);
    rope(k, head_size, pos_);
    keys_[lu].insert(keys_[lu].end(), k.begin(), k.end());
    values_[lu].insert(values_[lu].end(), v.begin(), v.end());

    std::vector<float> att_out(d, 0.f);
    const int n = pos_ + 1;
    for (int hq = 0; hq < heads_; ++hq) {
      const int hk = hq / group;
      std::vector<double> score(static_cast<std::size_t>(n));
      double mx = -1e300;
      for (int t = 0; t < n; ++t) {
        double s = 0;
        for (int i = 0; i < head_size; ++i) {
          s += double{q[static_cast<std::size_t>(hq * head_size + i)]} *
               keys_[lu][static_cast<std::size_t>(t * kv_dim + hk * head_size + i)];
        }
        score[static_cast<std::size_t>(t)] = s / std::sqrt(static_cast<double>(head_size));
        mx = std::max(mx, score[static_cast<std::size_t>(t)]);
      }
      double sum = 0;
      for (double& s : score) sum += (s = std::exp(s - mx));
      for (int t = 0; t < n; ++t) {
        const double p = score[static_cast<std::size_t>(t)] / sum;
        for (int i = 0; i < head_size; ++i) {
          att_out[static_cast<std::size_t>(hq * head_size + i)] +=
              static_cast<float>(p * values_[lu][static_cast<std::size_t>(t * kv_dim + hk * head_size + i)]);
        }
      }
    }
    std::vector<float> o = matvec(&w_[wo_ + lu * d * d], att_out, dim_, dim_);
    for (std::size_t i = 0; i < d; ++i) x[i] += o[i];

    xb = rmsnorm(x, &w_[rms_ffn_ + lu * d]);
    const std::size_t hsz = d * static_cast<std::size_t>(hidden_);
    std::vector<float> h1 = matvec(&w_[w1_ + lu * hsz], xb, hidden_, dim_);
    std::vector<float> h3 = matvec(&w_[w3_ + lu * hsz], xb, hidden_, dim_);
    for (std::size_t i = 0; i < h1.size(); ++i) h1[i] = h1[i] / (1.0f + std::exp(-h1[i])) * h3[i];
    std::vector<float> f = matvec(&w_[w2_ + lu * hsz], h1, dim_, hidden_);
    for (std::size_t i = 0; i < d; ++i) x[i] += f[i];
  }
  x = rmsnorm(x, &w_[rms_final_]);
  ++pos_;
  return matvec(&w_[wcls_], x, vocab_, dim_);
}

}  // namespace kvcache::llama::test
