// Random-weight models: the file opens with the GGUF reader, carries llama.cpp's keys and tensor
// names with the right types and dims, holds N(0, 0.02) weights, and is the same for the same seed.
#include "llama/random_model.h"

#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <vector>

#include "llama/ggml_quant.h"
#include "llama/gguf_file.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

// A tiny qwen2-shaped model: dim 320 is not a multiple of 256, so its q4_K attention and
// gate/up matrices fall back to q8_0 while ffn_down (cols 512) stays q4_K.
ModelShape tiny_qwen2() {
  ModelShape s;
  s.name = "tiny";
  s.architecture = "qwen2";
  s.n_layers = 2;
  s.dim = 320;
  s.n_heads = 5;
  s.n_kv_heads = 1;
  s.ffn_dim = 512;
  s.vocab = 300;
  s.context_length = 128;
  s.tied_output = false;
  return s;
}

std::vector<char> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("random model: keys, tensor names, types, dims and weight statistics") {
  const TempFile f("random_model", {});
  const RandomModelInfo info = write_random_model(tiny_qwen2(), GgmlType::q4_k, 7, f.path());
  const auto g = GgufFile::open(f.path());
  CHECK(g->require_string("general.architecture") == "qwen2");
  CHECK(g->require_uint("qwen2.block_count") == 2);
  CHECK(g->require_uint("qwen2.embedding_length") == 320);
  CHECK(g->require_uint("qwen2.attention.head_count") == 5);
  CHECK(g->require_uint("qwen2.attention.head_count_kv") == 1);
  CHECK(g->require_uint("qwen2.rope.dimension_count") == 64);
  CHECK(g->require_string("tokenizer.ggml.model") == "llama");
  const auto tokens = g->get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens);
  CHECK(tokens->size() == 300);
  CHECK((*tokens)[1] == "<s>");
  CHECK((*tokens)[3 + 0x41] == "<0x41>");

  // 1 embedding + 2 x (2 norms + 7 matrices + 3 biases) + output norm + output.
  CHECK(info.n_tensors == 1 + 2 * 12 + 2);
  CHECK(g->tensors().size() == info.n_tensors);
  CHECK(info.fallback_tensors == 2 + 2 * 6);  // all matrices with 320 columns
  const GgufTensor* down = g->find_tensor("blk.1.ffn_down.weight");
  const GgufTensor* k = g->find_tensor("blk.0.attn_k.weight");
  const GgufTensor* bias = g->find_tensor("blk.0.attn_v.bias");
  const GgufTensor* norm = g->find_tensor("output_norm.weight");
  REQUIRE(down);
  REQUIRE(k);
  REQUIRE(bias);
  REQUIRE(norm);
  CHECK(down->type == GgmlType::q4_k);
  CHECK(down->dims == std::vector<std::uint64_t>{512, 320});
  CHECK(k->type == GgmlType::q8_0);
  CHECK(k->dims == std::vector<std::uint64_t>{320, 64});
  CHECK(bias->type == GgmlType::f32);
  CHECK(bias->dims == std::vector<std::uint64_t>{64});
  CHECK(norm->type == GgmlType::f32);

  // The weights: mean ~0 and standard deviation ~0.02 (163840 samples: sampling error < 1%,
  // q4_K rounding adds ~10% of the variance at most).
  const WeightMatrix m = down->matrix();
  std::vector<float> row(m.cols);
  double s = 0, s2 = 0;
  for (std::uint32_t r = 0; r < m.rows; ++r) {
    dequantize_row(m.type, m.row(r), row);
    for (float v : row) {
      s += v;
      s2 += double(v) * v;
    }
  }
  const double n = double(m.rows) * m.cols, mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  CHECK(std::fabs(mean) < 0.001);
  CHECK(sd > 0.019);
  CHECK(sd < 0.0215);
  std::vector<float> ones(320);
  dequantize_row(GgmlType::f32, norm->data.data(), ones);
  for (float v : ones) CHECK(v == 1.f);
}

TEST_CASE("random model: the same seed writes the same file, another seed another") {
  const TempFile a("random_a", {}), b("random_b", {}), c("random_c", {});
  ModelShape s = tiny_qwen2();
  s.architecture = "llama";
  write_random_model(s, GgmlType::q8_0, 3, a.path());
  write_random_model(s, GgmlType::q8_0, 3, b.path());
  write_random_model(s, GgmlType::q8_0, 4, c.path());
  CHECK(read_all(a.path()) == read_all(b.path()));
  CHECK(read_all(a.path()) != read_all(c.path()));
  CHECK(GgufFile::open(a.path())->find_tensor("blk.0.attn_q.bias") == nullptr);  // llama: no biases
}

TEST_CASE("random model: named shapes and bad shapes") {
  CHECK(find_model_shape("tinyllama-1.1b")->ffn_dim == 5632);
  CHECK(find_model_shape("qwen2-0.5b")->vocab == 151936);
  CHECK_FALSE(find_model_shape("gpt-5"));
  ModelShape s = tiny_qwen2();
  s.n_heads = 3;  // 320 is not a multiple of 3
  const TempFile f("random_bad", {});
  CHECK_THROWS_AS(write_random_model(s, GgmlType::q8_0, 1, f.path()), InvalidArgument);
}

}  // namespace kvcache::llama::test
