// Tiny random-weight GGUF models for tests: the f32 weights, and a GGUF file of them written with
// the test GGUF writer in a chosen tensor type, optionally edited to be wrong in one way.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "llama/ggml_type.h"
#include "llama/gguf_writer.h"

namespace kvcache::llama::test {

/// Shape and options of a tiny model. Defaults: a GQA llama whose rows are multiples of 256, so
/// every tensor type (Q4_K and Q6_K need 256) applies.
struct TinySpec {
  std::string arch = "llama";  ///< general.architecture ("qwen2" adds Q/K/V biases)
  std::uint32_t dim = 256, hidden = 512, layers = 2, heads = 4, kv_heads = 2, vocab = 96;
  bool tied = false;              ///< no output.weight: the classifier is token_embd
  double theta = 10000.0;         ///< rope.freq_base
  float eps = 1e-5f;              ///< attention.layer_norm_rms_epsilon
  bool rope_freqs = false;        ///< write a Llama 3 style rope_freqs.weight
  GgmlType type = GgmlType::f32;  ///< type of every matrix (norms, biases, rope_freqs stay f32)
  std::uint64_t seed = 1;
};

/// The model's weights in f32, by GGUF tensor name (matrices [rows][cols] row-major, i.e. ne =
/// {cols, rows}), each with its GGUF dims.
struct TinyWeights {
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, std::vector<std::uint64_t>> dims;
  const std::vector<float>& at(const std::string& name) const { return values.at(name); }
  bool has(const std::string& name) const { return values.count(name) != 0; }
};

/// Random weights for `spec` (fixed by spec.seed): matrices ~ U(-a, a) with a = sqrt(3 / cols)
/// (unit-variance outputs), norms around 1, biases and embeddings of order 1, rope factors
/// 1..8 like Llama 3.1's.
TinyWeights make_tiny_weights(const TinySpec& spec);

/// Ways to make a file wrong (tests of the loader's errors).
struct TinyEdits {
  std::set<std::string> drop_tensors = {};                         ///< leave these tensors out
  std::set<std::string> drop_keys = {};                            ///< leave these keys out (full names)
  std::map<std::string, std::uint32_t> u32_keys = {};              ///< replace (or add) u32 keys
  std::map<std::string, std::vector<std::uint64_t>> reshape = {};  ///< write zeros of these dims instead
};

/// The GGUF file of `spec` with weights `w` (matrices converted to spec.type), with `edits`.
/// Metadata: general.architecture and the <arch>.* hyper-parameters; no tokenizer. When `stored`
/// is given it receives the weights as the file holds them: every matrix quantised to spec.type
/// and decoded again (ggml_quant.h), so a reference run on these sees exactly the stored values.
std::vector<std::byte> tiny_gguf(const TinySpec& spec, const TinyWeights& w, const TinyEdits& edits = {},
                                 TinyWeights* stored = nullptr);

}  // namespace kvcache::llama::test
