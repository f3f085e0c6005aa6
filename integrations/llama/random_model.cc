#include "llama/random_model.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "kvcache/error.h"
#include "llama/ggml_quant.h"
#include "llama/gguf_writer.h"

namespace kvcache::llama {
namespace {

const std::array<ModelShape, 3> kShapes = {{
    {"tinyllama-1.1b", "llama", 22, 2048, 32, 4, 5632, 32000, 2048, 10000.f, 1e-5f, false},
    {"smollm-135m", "llama", 30, 576, 9, 3, 1536, 49152, 2048, 10000.f, 1e-5f, true},
    {"qwen2-0.5b", "qwen2", 24, 896, 14, 2, 4864, 151936, 32768, 1000000.f, 1e-6f, true},
}};

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t hash_name(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

// N(0, sigma) values for elements [i0, i0 + out.size()) of a tensor keyed by `key`: Box-Muller on
// two counter-hashed uniforms per pair of elements, so any slice can be made independently.
void normal_values(std::uint64_t key, std::uint64_t i0, float sigma, std::span<float> out) {
  for (std::size_t j = 0; j < out.size(); ++j) {
    const std::uint64_t i = i0 + j, pair = i / 2;
    const std::uint64_t a = splitmix64(key ^ splitmix64(2 * pair)),
                        b = splitmix64(key ^ splitmix64(2 * pair + 1));
    const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1p-53;  // (0, 1]
    const double u2 = static_cast<double>(b >> 11) * 0x1p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double z = (i % 2 == 0) ? r * std::cos(2 * M_PI * u2) : r * std::sin(2 * M_PI * u2);
    out[j] = static_cast<float>(sigma * z);
  }
}

class ModelWriter {
 public:
  ModelWriter(GgmlType type, std::uint64_t seed) : type_(type), seed_(seed) {}

  // A [rows][cols] matrix (GGUF dims {cols, rows}) of N(0, 0.02) weights.
  void matrix(const std::string& name, std::uint32_t rows, std::uint32_t cols) {
    GgmlType t = type_;
    if (ggml_block_elems(t) == 256 && cols % 256 != 0) {
      t = GgmlType::q8_0;
      ++info_.fallback_tensors;
    }
    if (cols % ggml_block_elems(t) != 0)
      throw InvalidArgument("random model: " + name + " has " + std::to_string(cols) +
                            " columns, not whole " + std::string(ggml_type_name(t)) + " blocks");
    const std::size_t row_bytes = *ggml_row_bytes(t, cols);
    const std::uint64_t key = splitmix64(seed_ ^ hash_name(name));
    const std::array<std::uint64_t, 2> dims{cols, rows};
    writer_.add_tensor_generated(name, t, dims, [=](std::span<std::byte> out) {
      oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::uint32_t>(0, rows, 16),
                                [&](const oneapi::tbb::blocked_range<std::uint32_t>& r) {
                                  std::vector<float> row(cols);
                                  for (std::uint32_t i = r.begin(); i != r.end(); ++i) {
                                    normal_values(key, std::uint64_t{i} * cols, 0.02f, row);
                                    quantize_row(t, row, out.data() + i * row_bytes);
                                  }
                                });
    });
    count(std::uint64_t{rows} * cols, rows * row_bytes);
  }

  // An f32 vector: ones (norm weights) or N(0, 0.02) (biases).
  void vector(const std::string& name, std::uint32_t n, bool random) {
    std::vector<float> v(n, 1.f);
    if (random) normal_values(splitmix64(seed_ ^ hash_name(name)), 0, 0.02f, v);
    const std::array<std::uint64_t, 1> dims{n};
    writer_.add_tensor_f32(name, dims, v);
    count(n, 4 * std::uint64_t{n});
  }

  GgufWriter& writer() { return writer_; }
  RandomModelInfo& info() { return info_; }

 private:
  void count(std::uint64_t params, std::uint64_t bytes) {
    ++info_.n_tensors;
    info_.n_parameters += params;
    info_.file_bytes += bytes;
  }

  GgmlType type_;
  std::uint64_t seed_;
  GgufWriter writer_;
  RandomModelInfo info_;
};

// llama.cpp's general.file_type (enum llama_ftype) for a model whose matrices are `type`.
std::uint32_t file_type(GgmlType type) {
  switch (type) {
    case GgmlType::f32:
      return 0;
    case GgmlType::f16:
      return 1;
    case GgmlType::q4_0:
      return 2;
    case GgmlType::q8_0:
      return 7;
    case GgmlType::q4_k:
      return 14;  // Q4_K_S: all matrices q4_K
    case GgmlType::q6_k:
      return 18;
    case GgmlType::bf16:
      return 32;
  }
  return 0;
}

void add_vocab(GgufWriter& w, std::uint32_t vocab) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;  // 1 normal, 2 unknown, 3 control, 6 byte
  tokens.reserve(vocab);
  const auto add = [&](std::string piece, float score, std::int32_t type) {
    tokens.push_back(std::move(piece));
    scores.push_back(score);
    types.push_back(type);
  };
  add("<unk>", 0.f, 2);
  add("<s>", 0.f, 3);
  add("</s>", 0.f, 3);
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    add(hex, 0.f, 6);
  }
  // Filler pieces: "▁" then the base-26 spelling of the index, all distinct.
  for (std::uint32_t i = 0; tokens.size() < vocab; ++i) {
    std::string piece = "\xE2\x96\x81";
    std::uint32_t k = i;
    do {
      piece += static_cast<char>('a' + k % 26);
      k /= 26;
    } while (k > 0);
    add(piece, -static_cast<float>(i), 1);
  }
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  w.add_f32_array("tokenizer.ggml.scores", scores);
  w.add_i32_array("tokenizer.ggml.token_type", types);
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  w.add_u32("tokenizer.ggml.unknown_token_id", 0);
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  w.add_bool("tokenizer.ggml.add_eos_token", false);
}

}  // namespace

std::span<const ModelShape> model_shapes() { return kShapes; }

std::optional<ModelShape> find_model_shape(std::string_view name) {
  for (const ModelShape& s : kShapes)
    if (s.name == name) return s;
  return std::nullopt;
}

RandomModelInfo write_random_model(const ModelShape& s, GgmlType type, std::uint64_t seed,
                                   const std::filesystem::path& path) {
  if (s.n_layers == 0 || s.dim == 0 || s.n_heads == 0 || s.n_kv_heads == 0 || s.ffn_dim == 0 ||
      s.vocab < 259 + 1 || s.dim % s.n_heads != 0 || s.n_heads % s.n_kv_heads != 0 ||
      (s.architecture != "llama" && s.architecture != "qwen2"))
    throw InvalidArgument("random model '" + s.name + "': inconsistent shape (architecture " +
                          s.architecture + ", dim " + std::to_string(s.dim) + ", heads " +
                          std::to_string(s.n_heads) + "/" + std::to_string(s.n_kv_heads) + ", vocab " +
                          std::to_string(s.vocab) + ")");
  const std::uint32_t head_dim = s.dim / s.n_heads, kv_dim = head_dim * s.n_kv_heads;
  const std::string& a = s.architecture;
  ModelWriter m(type, seed);
  GgufWriter& w = m.writer();
  w.add_string("general.architecture", a);
  w.add_string("general.name", s.name + " (random weights)");
  w.add_u32("general.file_type", file_type(type));
  w.add_u32(a + ".context_length", s.context_length);
  w.add_u32(a + ".embedding_length", s.dim);
  w.add_u32(a + ".block_count", s.n_layers);
  w.add_u32(a + ".feed_forward_length", s.ffn_dim);
  w.add_u32(a + ".attention.head_count", s.n_heads);
  w.add_u32(a + ".attention.head_count_kv", s.n_kv_heads);
  w.add_u32(a + ".rope.dimension_count", head_dim);
  w.add_f32(a + ".rope.freq_base", s.rope_freq_base);
  w.add_f32(a + ".attention.layer_norm_rms_epsilon", s.rms_eps);
  add_vocab(w, s.vocab);

  m.matrix("token_embd.weight", s.vocab, s.dim);
  for (std::uint32_t l = 0; l < s.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    m.vector(b + "attn_norm.weight", s.dim, false);
    m.matrix(b + "attn_q.weight", s.dim, s.dim);
    m.matrix(b + "attn_k.weight", kv_dim, s.dim);
    m.matrix(b + "attn_v.weight", kv_dim, s.dim);
    if (a == "qwen2") {
      m.vector(b + "attn_q.bias", s.dim, true);
      m.vector(b + "attn_k.bias", kv_dim, true);
      m.vector(b + "attn_v.bias", kv_dim, true);
    }
    m.matrix(b + "attn_output.weight", s.dim, s.dim);
    m.vector(b + "ffn_norm.weight", s.dim, false);
    m.matrix(b + "ffn_gate.weight", s.ffn_dim, s.dim);
    m.matrix(b + "ffn_up.weight", s.ffn_dim, s.dim);
    m.matrix(b + "ffn_down.weight", s.dim, s.ffn_dim);
  }
  m.vector("output_norm.weight", s.dim, false);
  if (!s.tied_output) m.matrix("output.weight", s.vocab, s.dim);
  w.write(path);
  RandomModelInfo info = m.info();
  info.file_bytes = std::filesystem::file_size(path);
  return info;
}

}  // namespace kvcache::llama
