#include "tiny_model.h"

#include <cmath>

#include "llama/ggml_quant.h"

namespace kvcache::llama::test {
namespace {

bool is_matrix(const std::vector<std::uint64_t>& dims) { return dims.size() == 2; }

}  // namespace

TinyWeights make_tiny_weights(const TinySpec& s) {
  std::mt19937_64 rng(s.seed);
  TinyWeights w;
  const std::uint64_t hd = s.dim / s.heads, kv = std::uint64_t{s.kv_heads} * hd;
  auto add = [&](const std::string& name, std::vector<std::uint64_t> dims, float lo, float hi) {
    std::uint64_t n = 1;
    for (std::uint64_t d : dims) n *= d;
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    w.values[name] = std::move(v);
    w.dims[name] = std::move(dims);
  };
  auto matrix = [&](const std::string& name, std::uint64_t cols, std::uint64_t rows) {
    const float a = std::sqrt(3.f / static_cast<float>(cols));
    add(name, {cols, rows}, -a, a);
  };
  add("token_embd.weight", {s.dim, s.vocab}, -1.f, 1.f);
  add("output_norm.weight", {s.dim}, 0.8f, 1.2f);
  if (!s.tied) matrix("output.weight", s.dim, s.vocab);
  if (s.rope_freqs) {
    add("rope_freqs.weight", {hd / 2}, 1.f, 1.f);
    auto& f = w.values["rope_freqs.weight"];
    for (std::size_t i = 0; i < f.size(); ++i)
      f[i] = 1.f + 7.f * static_cast<float>(i) / static_cast<float>(f.size());
  }
  for (std::uint32_t il = 0; il < s.layers; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    add(b + "attn_norm.weight", {s.dim}, 0.8f, 1.2f);
    matrix(b + "attn_q.weight", s.dim, s.dim);
    matrix(b + "attn_k.weight", s.dim, kv);
    matrix(b + "attn_v.weight", s.dim, kv);
    matrix(b + "attn_output.weight", s.dim, s.dim);
    if (s.arch == "qwen2") {
      add(b + "attn_q.bias", {s.dim}, -0.5f, 0.5f);
      add(b + "attn_k.bias", {kv}, -0.5f, 0.5f);
      add(b + "attn_v.bias", {kv}, -0.5f, 0.5f);
    }
    add(b + "ffn_norm.weight", {s.dim}, 0.8f, 1.2f);
    matrix(b + "ffn_gate.weight", s.dim, s.hidden);
    matrix(b + "ffn_up.weight", s.dim, s.hidden);
    matrix(b + "ffn_down.weight", s.hidden, s.dim);
  }
  return w;
}

namespace {

// The bytes of one matrix of `w` in `type`, row by row.
std::vector<std::byte> encode(GgmlType type, const std::vector<float>& v, std::uint64_t cols) {
  const std::size_t row_bytes = *ggml_row_bytes(type, cols);
  const std::size_t rows = v.size() / cols;
  std::vector<std::byte> out(rows * row_bytes);
  for (std::size_t r = 0; r < rows; ++r) {
    quantize_row(type, std::span(v).subspan(r * cols, cols), out.data() + r * row_bytes);
  }
  return out;
}

}  // namespace

std::vector<std::byte> tiny_gguf(const TinySpec& s, const TinyWeights& w, const TinyEdits& e,
                                 TinyWeights* stored) {
  GgufWriter g;
  if (stored != nullptr) *stored = w;
  const std::string a = s.arch;
  auto u32 = [&](const std::string& key, std::uint32_t v) {
    if (e.drop_keys.count(key) || e.u32_keys.count(key)) return;
    g.add_u32(key, v);
  };
  if (!e.drop_keys.count("general.architecture")) g.add_string("general.architecture", a);
  u32(a + ".block_count", s.layers);
  u32(a + ".context_length", 256);
  u32(a + ".embedding_length", s.dim);
  u32(a + ".feed_forward_length", s.hidden);
  u32(a + ".attention.head_count", s.heads);
  u32(a + ".attention.head_count_kv", s.kv_heads);
  u32(a + ".rope.dimension_count", s.dim / s.heads);
  u32(a + ".vocab_size", s.vocab);
  if (!e.drop_keys.count(a + ".rope.freq_base"))
    g.add_f32(a + ".rope.freq_base", static_cast<float>(s.theta));
  if (!e.drop_keys.count(a + ".attention.layer_norm_rms_epsilon"))
    g.add_f32(a + ".attention.layer_norm_rms_epsilon", s.eps);
  for (const auto& [key, v] : e.u32_keys) g.add_u32(key, v);
  for (const auto& [name, v] : w.values) {
    if (e.drop_tensors.count(name)) continue;
    if (auto it = e.reshape.find(name); it != e.reshape.end()) {
      std::uint64_t n = 1;
      for (std::uint64_t d : it->second) n *= d;
      g.add_tensor_f32(name, it->second, std::vector<float>(n, 0.f));
      continue;
    }
    const auto& dims = w.dims.at(name);
    if (is_matrix(dims) && s.type != GgmlType::f32) {
      const std::vector<std::byte> bytes = encode(s.type, v, dims[0]);
      g.add_tensor(name, s.type, dims, bytes);
      if (stored != nullptr) {
        std::vector<float>& out = stored->values.at(name);
        const std::size_t row_bytes = *ggml_row_bytes(s.type, dims[0]);
        for (std::size_t r = 0; r < v.size() / dims[0]; ++r)
          dequantize_row(s.type, bytes.data() + r * row_bytes, std::span(out).subspan(r * dims[0], dims[0]));
      }
    } else {
      g.add_tensor_f32(name, dims, v);
    }
  }
  return g.bytes();
}

}  // namespace kvcache::llama::test
