// Flags shared by every kvstream subcommand: model files and the KV cache policy.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "llama/checkpoint.h"
#include "llama/model.h"
#include "llama/text_tokenizer.h"
#include "llama/tokenizer.h"

namespace kvstream {

struct CommonOptions {
  std::string model;             ///< --model; empty = resolve (see llama/model_paths.h)
  std::string tokenizer;         ///< --tokenizer; empty = resolve
  std::string weights = "mmap";  ///< --weights: mmap or memory (llama::FileResidence), GGUF only
  std::string policy = "sinks";
  std::uint32_t budget = 256;
  std::uint32_t sinks = 4;
  std::uint32_t hidden_sinks = 8;    ///< cap on detected sinks pinned (hidden-sinks)
  std::uint32_t heavy = 0;           ///< heavy-hitter slots (h2o), 0 = budget / 2
  float sink_alpha = 5.f;            ///< detector threshold, multiples of the uniform share
  float sink_decay = 0.9f;           ///< detector EMA decay per query
  std::uint16_t sink_min_heads = 0;  ///< (layer, head) pairs a hidden sink needs; 0 = 20% of them
  float calibrate_beta = 1.f;        ///< ACT calibration, 1 = off
  std::uint32_t page_tokens = 16;
  std::string kv_dtype = "f32";
  std::string pinned_dtype;  ///< --pinned-dtype; empty = kv_dtype
  std::string positions = "reindexed";
  double max_kv_mb = 1024;
  std::string attention = "simd";
  /// --threads: oneTBB threads the run's products and attention use; unset = every core.
  std::optional<int> threads;
};

/// Registers --model, --tokenizer, the cache flags and the thread count on `app`, writing into
/// `opts`. Without `policy_flags`, --policy and --budget are left out (sweep takes lists of them
/// instead). `threads_flag` names the thread-count option ("--threads"; serve, whose --threads
/// counts HTTP connections, passes "--decode-threads").
void add_common_options(CLI::App& app, CommonOptions& opts, bool policy_flags = true,
                        const std::string& threads_flag = "--threads");

/// The thread count to run with: --threads, or every core oneTBB sees when it is not given.
int thread_count(const CommonOptions& opts);

/// Runs `f` inside a oneTBB task_arena of thread_count(opts) threads (the calling thread is one of
/// them), so every parallel loop below it (matrix products, attention) uses at most that many
/// threads. Returns what `f` returns; exceptions propagate.
template <class F>
auto run_in_arena(const CommonOptions& opts, F&& f) {
  oneapi::tbb::task_arena arena(thread_count(opts));
  return arena.execute(std::forward<F>(f));
}

/// The decoder's cache options for the flags (validated by the library when the cache is built).
/// `model` resolves --sink-min-heads 0 to 20% of its layer x head pairs.
kvcache::llama::CacheOptions cache_options(const CommonOptions& opts,
                                           const kvcache::llama::ModelConfig& model);

/// --pinned-dtype as used: the flag, or --kv-dtype when it is empty.
std::string pinned_dtype(const CommonOptions& opts);

/// Model, tokenizer and where they came from.
struct LoadedModel {
  std::shared_ptr<const kvcache::llama::ModelWeights> weights;
  /// The GGUF file's own tokenizer, or the llama2.c tokenizer file's.
  std::shared_ptr<const kvcache::llama::TextTokenizer> tokenizer;
  std::string model_source, tokenizer_source;  ///< "flag", "env KVCACHE_MODEL", ...
  /// The GGUF file's tokenizer.chat_template (a Jinja template); unset for llama2.c files and
  /// GGUF files without one.
  std::optional<std::string> chat_template;
};

/// Resolves and loads the model and its tokenizer: from the one GGUF file (then --tokenizer is an
/// InvalidArgument), or from a llama2.c checkpoint and tokenizer file. Throws kvcache::Error /
/// FormatError naming the file.
LoadedModel load_model(const CommonOptions& opts);

/// The model as reports describe it: path, format ("llama2.c" / "gguf"), architecture, tensor
/// types with their counts, the hyper-parameters and the tokenizer.
nlohmann::json model_json(const LoadedModel& model);
/// One line: "gguf llama, 5 layers, dim 64, 8 heads (4 KV), vocab 512, rope adjacent_pairs theta
/// 10000; tensors f32 x48; tokenizer llama".
std::string model_summary(const LoadedModel& model);

/// policy, budget, sinks, window (tokens; null where the policy has none), positions, kv_dtype,
/// page_tokens: the cache description both subcommands report.
nlohmann::json policy_json(const CommonOptions& opts, const kvcache::llama::ModelConfig& model);
/// One line: "policy sinks (4 sinks + 252 window = budget 256), reindexed positions, f32 KV".
std::string policy_summary(const CommonOptions& opts, const kvcache::llama::ModelConfig& model);

/// "initial", "hidden_sink", "heavy_hitter" or "none": why a kept token is pinned.
const char* pin_reason_name(kvcache::PinReason reason);

/// --sink-min-heads as used: the flag, or 20% of the model's layer x head pairs when it is 0.
std::uint16_t sink_min_heads(const CommonOptions& opts, const kvcache::llama::ModelConfig& model);

}  // namespace kvstream
