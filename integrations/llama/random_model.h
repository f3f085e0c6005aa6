// Random-weight GGUF models of real model shapes, for benchmarks and tests that need a model of
// the right size but not of the right weights (bench/make_model is the command-line front end).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "llama/ggml_type.h"

namespace kvcache::llama {

/// The hyper-parameters of a llama-family model as GGUF stores them.
struct ModelShape {
  std::string name;          ///< e.g. "tinyllama-1.1b"
  std::string architecture;  ///< "llama" or "qwen2" (qwen2 adds q/k/v biases)
  std::uint32_t n_layers = 0, dim = 0, n_heads = 0, n_kv_heads = 0, ffn_dim = 0, vocab = 0;
  std::uint32_t context_length = 0;
  float rope_freq_base = 10000.f;
  float rms_eps = 1e-5f;
  bool tied_output = false;  ///< no output.weight: the logits use token_embd.weight
};

/// The named shapes: "tinyllama-1.1b", "smollm-135m", "qwen2-0.5b".
std::span<const ModelShape> model_shapes();
/// The named shape, or nullopt.
std::optional<ModelShape> find_model_shape(std::string_view name);

/// What write_random_model wrote.
struct RandomModelInfo {
  std::uint64_t n_tensors = 0;
  std::uint64_t n_parameters = 0;
  std::uint64_t file_bytes = 0;
  std::uint32_t fallback_tensors = 0;  ///< matrices written as q8_0 because cols % 256 != 0
};

/// Writes a GGUF v3 file at `path` that llama.cpp's llama/qwen2 loaders read: llama.cpp's tensor
/// names (token_embd.weight, blk.N.attn_{norm,q,k,v,output}.weight, blk.N.ffn_{norm,gate,up,down}
/// .weight, qwen2's blk.N.attn_{q,k,v}.bias, output_norm.weight, output.weight unless tied) and
/// hyper-parameter keys (<arch>.block_count, ...), and a minimal `llama` tokenizer vocabulary
/// (<unk>, <s>, </s>, the 256 byte tokens, then distinct filler pieces up to the vocabulary size).
/// Matrices are in `type`, norms are ones and biases random, in f32. Weights are N(0, 0.02) from
/// a counter-based generator keyed by (seed, tensor, element), so the file does not depend on the
/// thread count. A K-quant matrix whose rows are not whole 256-blocks is written as q8_0 (as
/// llama.cpp's quantiser falls back), counted in fallback_tensors.
/// Tensors are generated one at a time while the file is written (rows in parallel with oneTBB),
/// so memory stays at one tensor. Throws InvalidArgument for an inconsistent shape or a `type`
/// whose block does not divide the dimension, kvcache::Error when the file cannot be written.
RandomModelInfo write_random_model(const ModelShape& shape, GgmlType type, std::uint64_t seed,
                                   const std::filesystem::path& path);

}  // namespace kvcache::llama
