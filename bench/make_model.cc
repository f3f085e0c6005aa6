// make_model: writes a random-weight GGUF model of a named shape in a chosen tensor type, so
// anybody can benchmark real model sizes without downloading weights (see README, "Benchmark
// models"). The text such a model generates is meaningless; its speed is real.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "kvcache/error.h"
#include "llama/ggml_type.h"
#include "llama/random_model.h"

namespace {

using kvcache::llama::GgmlType;

constexpr GgmlType kTypes[] = {GgmlType::f32,  GgmlType::f16,  GgmlType::bf16, GgmlType::q8_0,
                               GgmlType::q4_0, GgmlType::q4_k, GgmlType::q6_k};

std::string shape_names() {
  std::string s;
  for (const auto& shape : kvcache::llama::model_shapes()) s += (s.empty() ? "" : ", ") + shape.name;
  return s;
}

std::string type_names() {
  std::string s;
  for (GgmlType t : kTypes) s += (s.empty() ? "" : ", ") + std::string(kvcache::llama::ggml_type_name(t));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Writes a GGUF model with random N(0, 0.02) weights in the shape of a known model, for benchmarks.\n"
      "Tensor names, hyper-parameter keys and a minimal llama tokenizer follow llama.cpp, so the file\n"
      "loads like the real model; norms are f32 ones, matrices are in --type (K-quant matrices whose\n"
      "rows are not whole 256-blocks fall back to q8_0, as llama.cpp's quantiser does).\n"
      "Example: make_model --shape tinyllama-1.1b --type q8_0 --out /tmp/tinyllama-q8_0.gguf"};
  std::string shape_name, type_name = "q8_0", out;
  std::uint64_t seed = 1;
  bool json = false;
  app.add_option("--shape", shape_name, "model shape: " + shape_names())->required();
  app.add_option("--type", type_name, "tensor type of the matrices: " + type_names())->capture_default_str();
  app.add_option("--out", out, "GGUF file to write (replaced atomically)")->required();
  app.add_option("--seed", seed, "seed of the weights (same seed, same file)")->capture_default_str();
  app.add_flag("--json", json, "print the summary as JSON on stdout");
  CLI11_PARSE(app, argc, argv);

  const auto shape = kvcache::llama::find_model_shape(shape_name);
  if (!shape) {
    std::cerr << "make_model: unknown shape '" << shape_name << "' (known: " << shape_names() << ")\n";
    return 2;
  }
  std::optional<GgmlType> type;
  for (GgmlType t : kTypes)
    if (kvcache::llama::ggml_type_name(t) == type_name) type = t;
  if (!type) {
    std::cerr << "make_model: unknown type '" << type_name << "' (known: " << type_names() << ")\n";
    return 2;
  }
  if (::isatty(STDERR_FILENO) == 1) std::cerr << "writing " << out << " ...\n";
  const auto t0 = std::chrono::steady_clock::now();
  try {
    const auto info = kvcache::llama::write_random_model(*shape, *type, seed, out);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (json) {
      nlohmann::json j{{"file", out},
                       {"shape", shape->name},
                       {"architecture", shape->architecture},
                       {"type", type_name},
                       {"seed", seed},
                       {"tensors", info.n_tensors},
                       {"parameters", info.n_parameters},
                       {"bytes", info.file_bytes},
                       {"q8_0_fallback_tensors", info.fallback_tensors},
                       {"seconds", seconds}};
      std::cout << j.dump(2) << "\n";
    } else {
      std::printf("%s: %s (%s) in %s, seed %llu: %llu tensors, %.1f M parameters, %.1f MiB", out.c_str(),
                  shape->name.c_str(), shape->architecture.c_str(), type_name.c_str(),
                  static_cast<unsigned long long>(seed), static_cast<unsigned long long>(info.n_tensors),
                  static_cast<double>(info.n_parameters) / 1e6,
                  static_cast<double>(info.file_bytes) / (1 << 20));
      if (info.fallback_tensors > 0) std::printf(", %u matrices as q8_0", info.fallback_tensors);
      std::printf(", %.1f s\n", seconds);
    }
  } catch (const kvcache::Error& e) {
    std::cerr << "make_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
