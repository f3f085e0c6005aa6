#include "common_options.h"

#include <fmt/format.h>
#include <oneapi/tbb/info.h>

#include <algorithm>

#include "kvcache/dtype.h"
#include "kvcache/error.h"
#include "llama/gguf_file.h"
#include "llama/gguf_model.h"
#include "llama/gguf_tokenizer.h"
#include "llama/model_file.h"
#include "llama/model_paths.h"

namespace kvstream {

void add_common_options(CLI::App& app, CommonOptions& o, bool policy_flags, const std::string& threads_flag) {
  app.add_option(
      "--model", o.model,
      "model file: a GGUF file (llama.cpp's format; architectures llama and qwen2, tensor types f32, f16, "
      "bf16, q8_0, q4_0, q4_K, q6_K; its tokenizer comes from the file) or a llama2.c checkpoint (.bin), "
      "told "
      "apart by the magic. Default: $KVCACHE_MODEL, else models/stories260K.bin in the repo, else "
      "../shared/models/stories260K.bin next to the repo");
  app.add_option("--weights", o.weights,
                 "where a GGUF model's weights live: mmap (the file's pages, mapped in place; instant "
                 "start, shared with other processes) or memory (read into a private copy in 2 MiB huge "
                 "pages at start; about 1.3x faster decode on large models, which stream every weight per "
                 "token). llama2.c checkpoints are always read into memory")
      ->check(CLI::IsMember({"mmap", "memory"}))
      ->capture_default_str();
  app.add_option(
      "--tokenizer", o.tokenizer,
      "llama2.c tokenizer (.bin), for a llama2.c checkpoint only (an error with a GGUF model, which has "
      "its own). Default: $KVCACHE_TOKENIZER, else models/tok512.bin in the repo, else "
      "../shared/models/tok512.bin next to the repo");
  if (policy_flags) {
    app.add_option(
           "--policy", o.policy,
           "KV retention: full (keep everything), window (last B tokens), sinks (first S tokens + last B-S, "
           "StreamingLLM), hidden-sinks (first S + up to H detected sinks + the rest recent, all within B), "
           "h2o (up to --heavy tokens with the most accumulated attention + the rest recent)")
        ->check(CLI::IsMember({"full", "window", "sinks", "hidden-sinks", "h2o"}))
        ->capture_default_str();
    app.add_option("--budget", o.budget,
                   "tokens kept per layer, everything pinned included (every policy but full), so policies "
                   "compare at equal memory")
        ->check(CLI::Range(1u, 1u << 30))
        ->capture_default_str();
  }
  app.add_option("--sinks", o.sinks,
                 "initial tokens pinned forever (sinks, hidden-sinks); the rest of the budget is the window")
      ->capture_default_str();
  app.add_option("--hidden-sinks", o.hidden_sinks,
                 "hidden-sinks: most detected sinks pinned at once, taken out of the budget")
      ->capture_default_str();
  app.add_option("--heavy", o.heavy, "h2o: heavy-hitter slots out of the budget (0 = budget / 2)")
      ->capture_default_str();
  app.add_option("--sink-alpha", o.sink_alpha,
                 "sink detector: a token is a sink in a head when its mean attention exceeds alpha / N "
                 "(N keys; ACT's rule)")
      ->check(CLI::Range(1.0001, 1e6))
      ->capture_default_str();
  app.add_option("--sink-decay", o.sink_decay, "sink detector: per-query decay of the attention average")
      ->check(CLI::Range(0.001, 0.999))
      ->capture_default_str();
  app.add_option(
         "--sink-min-heads", o.sink_min_heads,
         "hidden-sinks: (layer, head) pairs where the rule must hold for a token to be pinned; 0 = 20% of "
         "the model's pairs (8 of stories260K's 40: with fewer, stray tokens such as URL brackets in "
         "licence text get pinned and hurt perplexity, see README)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--calibrate-beta", o.calibrate_beta,
                 "ACT calibration: scale the attention on detected non-initial sinks by beta and renormalise "
                 "(1 = off)")
      ->check(CLI::Range(0.001, 1.0))
      ->capture_default_str();
  app.add_option("--page-tokens", o.page_tokens, "tokens per KV page")
      ->check(CLI::Range(1u, 1u << 16))
      ->capture_default_str();
  app.add_option("--kv-dtype", o.kv_dtype,
                 "storage type of cached keys and values (of the window when --pinned-dtype is given): f32; "
                 "f16; q8 (int8, an f16 scale per token and head); q4 (4-bit, keys per channel within a page "
                 "and values per token, as KIVI; needs an even head_dim)")
      ->check(CLI::IsMember({"f32", "f16", "q8", "q4"}))
      ->capture_default_str();
  app.add_option(
         "--pinned-dtype", o.pinned_dtype,
         "storage type of pinned tokens (sinks, heavy hitters), e.g. --kv-dtype q4 --pinned-dtype f16 "
         "keeps the sinks precise; a token pinned later is re-stored from its dequantised value "
         "(default: --kv-dtype)")
      ->check(CLI::IsMember({"f32", "f16", "q8", "q4"}));
  app.add_option("--positions", o.positions,
                 "positions RoPE sees: reindexed (index in the cache, StreamingLLM) or absolute (index in "
                 "the stream)")
      ->check(CLI::IsMember({"reindexed", "absolute"}))
      ->capture_default_str();
  app.add_option("--max-kv-mb", o.max_kv_mb,
                 "KV page pool budget in MiB (reserved lazily; only the full policy can reach it)")
      ->check(CLI::Range(0.001, 1e7))
      ->capture_default_str();
  app.add_option("--attention", o.attention,
                 "attention kernel: simd (Highway, online softmax) or reference (scalar oracle, slow)")
      ->check(CLI::IsMember({"simd", "reference"}))
      ->capture_default_str();
  // A custom check, not CLI::PositiveNumber: the message says what to do to get every core.
  app.add_option(threads_flag, o.threads,
                 fmt::format("threads for the matrix products and attention (a oneTBB task arena of N "
                             "threads, the calling one included); default: every core ({} here)",
                             oneapi::tbb::info::default_concurrency()))
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            int n = 0;
            if (!CLI::detail::lexical_cast(value, n) || n < 1) {
              // CLI11 puts the flag's name in front of this message.
              return fmt::format(
                  "must be a whole number of threads, at least 1 (got '{}'; leave the flag "
                  "out to use every core)",
                  value);
            }
            return {};
          },
          "N >= 1"));
}

int thread_count(const CommonOptions& o) {
  return o.threads ? *o.threads : std::max(1, oneapi::tbb::info::default_concurrency());
}

const char* pin_reason_name(kvcache::PinReason r) {
  switch (r) {
    case kvcache::PinReason::initial:
      return "initial";
    case kvcache::PinReason::hidden_sink:
      return "hidden_sink";
    case kvcache::PinReason::heavy_hitter:
      return "heavy_hitter";
    case kvcache::PinReason::none:
      break;
  }
  return "none";
}

std::string pinned_dtype(const CommonOptions& o) {
  return o.pinned_dtype.empty() ? o.kv_dtype : o.pinned_dtype;
}

std::uint16_t sink_min_heads(const CommonOptions& o, const kvcache::llama::ModelConfig& model) {
  if (o.sink_min_heads != 0) return o.sink_min_heads;
  const std::uint64_t pairs = std::uint64_t{model.n_layers} * model.n_heads;
  return static_cast<std::uint16_t>(std::clamp<std::uint64_t>((pairs + 4) / 5, 1, 65535));
}

kvcache::llama::CacheOptions cache_options(const CommonOptions& o, const kvcache::llama::ModelConfig& model) {
  kvcache::llama::CacheOptions c;
  const kvcache::PolicyKind kind = kvcache::parse_policy(o.policy);
  switch (kind) {
    case kvcache::PolicyKind::full:
      c.policy = kvcache::PolicyConfig::full();
      break;
    case kvcache::PolicyKind::window:
      c.policy = kvcache::PolicyConfig::window(o.budget);
      break;
    case kvcache::PolicyKind::sinks:
      c.policy = kvcache::PolicyConfig::streaming(o.sinks, o.budget);
      break;
    case kvcache::PolicyKind::hidden_sinks:
      c.policy = kvcache::PolicyConfig::hidden(o.sinks, o.hidden_sinks, o.budget, sink_min_heads(o, model));
      break;
    case kvcache::PolicyKind::h2o:
      c.policy = kvcache::PolicyConfig::heavy_hitters(o.heavy, o.budget);
      break;
  }
  c.detector = kvcache::SinkDetectorOptions{o.sink_alpha, o.sink_decay};
  c.calibrate_beta = o.calibrate_beta;
  c.page_tokens = o.page_tokens;
  c.dtype = kvcache::parse_dtype(o.kv_dtype);
  if (!o.pinned_dtype.empty()) c.pinned_dtype = kvcache::parse_dtype(o.pinned_dtype);
  c.positions =
      o.positions == "absolute" ? kvcache::PositionMode::absolute : kvcache::PositionMode::reindexed;
  c.max_kv_bytes = static_cast<std::size_t>(o.max_kv_mb * 1024.0 * 1024.0);
  c.attention = kvcache::llama::parse_attention_kernel(o.attention);
  return c;
}

LoadedModel load_model(const CommonOptions& o) {
  namespace ll = kvcache::llama;
  const auto model = ll::resolve_model(o.model);
  if (ll::detect_model_format(model.path) == ll::ModelFormat::gguf) {
    // One file, one vocabulary: a second tokenizer could only disagree with the model's.
    if (!o.tokenizer.empty()) {
      throw kvcache::InvalidArgument(fmt::format(
          "--tokenizer {} cannot be used with the GGUF model {}: a GGUF file carries its own tokenizer "
          "(tokenizer.ggml.*); leave --tokenizer out",
          o.tokenizer, model.path.string()));
    }
    auto file = ll::GgufFile::open(model.path, ll::parse_file_residence(o.weights));
    auto weights = ll::load_gguf_model(file);
    std::shared_ptr<const ll::TextTokenizer> tokenizer = ll::load_gguf_tokenizer(*file);
    if (tokenizer->vocab_size() > weights->config.vocab_size) {
      file->fail(fmt::format("the tokenizer has {} tokens, more than the model's {} embedding rows",
                             tokenizer->vocab_size(), weights->config.vocab_size));
    }
    std::optional<std::string> chat_template;
    if (const auto t = file->get_string("tokenizer.chat_template")) chat_template = std::string(*t);
    return {std::move(weights), std::move(tokenizer), model.source, "model file (tokenizer.ggml.*)",
            std::move(chat_template)};
  }
  const auto tok = ll::resolve_tokenizer(o.tokenizer);
  auto weights = ll::checkpoint_weights(ll::Checkpoint::load(model.path));
  auto tokenizer =
      std::make_shared<const ll::Tokenizer>(ll::Tokenizer::load(tok.path, weights->config.vocab_size));
  return {std::move(weights), std::move(tokenizer), model.source, tok.source, std::nullopt};
}

nlohmann::json policy_json(const CommonOptions& o, const kvcache::llama::ModelConfig& model) {
  nlohmann::json j;
  j["policy"] = o.policy;
  if (o.policy == "full") {
    j["budget"] = nullptr;
    j["sinks"] = 0;
    j["window"] = nullptr;
  } else if (o.policy == "window") {
    j["budget"] = o.budget;
    j["sinks"] = 0;
    j["window"] = o.budget;
  } else if (o.policy == "sinks") {
    j["budget"] = o.budget;
    j["sinks"] = o.sinks;
    j["window"] = o.budget > o.sinks ? o.budget - o.sinks : 0;
  } else if (o.policy == "hidden-sinks") {
    // The window is what the pinned tokens leave: between budget - sinks - hidden_sinks and
    // budget - sinks, depending on how many hidden sinks are pinned.
    j["budget"] = o.budget;
    j["sinks"] = o.sinks;
    j["hidden_sinks"] = o.hidden_sinks;
    j["sink_min_heads"] = sink_min_heads(o, model);
    j["window"] = o.budget > o.sinks + o.hidden_sinks ? o.budget - o.sinks - o.hidden_sinks : 0;
  } else {
    const std::uint32_t heavy = o.heavy == 0 ? o.budget / 2 : o.heavy;
    j["budget"] = o.budget;
    j["sinks"] = 0;
    j["heavy"] = heavy;
    j["window"] = o.budget > heavy ? o.budget - heavy : 0;
  }
  if (o.policy == "hidden-sinks" || o.policy == "h2o" || o.calibrate_beta < 1.f) {
    j["sink_alpha"] = o.sink_alpha;
    j["sink_decay"] = o.sink_decay;
  }
  j["calibrate_beta"] = o.calibrate_beta;
  j["positions"] = o.positions;
  j["kv_dtype"] = o.kv_dtype;
  j["pinned_dtype"] = pinned_dtype(o);
  j["page_tokens"] = o.page_tokens;
  j["attention"] = o.attention;
  return j;
}

std::string policy_summary(const CommonOptions& o, const kvcache::llama::ModelConfig& model) {
  std::string p;
  if (o.policy == "full") {
    p = "full (no eviction)";
  } else if (o.policy == "window") {
    p = fmt::format("window (last {} tokens)", o.budget);
  } else if (o.policy == "sinks") {
    p = fmt::format("sinks ({} sinks + {} window = budget {})", o.sinks,
                    o.budget > o.sinks ? o.budget - o.sinks : 0, o.budget);
  } else if (o.policy == "hidden-sinks") {
    p = fmt::format(
        "hidden-sinks ({} sinks + up to {} detected sinks + window = budget {}; alpha {}, {} heads)", o.sinks,
        o.hidden_sinks, o.budget, o.sink_alpha, sink_min_heads(o, model));
  } else {
    p = fmt::format("h2o ({} heavy hitters + window = budget {})", o.heavy == 0 ? o.budget / 2 : o.heavy,
                    o.budget);
  }
  if (o.calibrate_beta < 1.f) p += fmt::format(", ACT calibration beta {}", o.calibrate_beta);
  const std::string kv =
      pinned_dtype(o) == o.kv_dtype ? o.kv_dtype : fmt::format("{} ({} pinned)", o.kv_dtype, pinned_dtype(o));
  return fmt::format("policy {}, {} positions, {} KV, {}-token pages", p, o.positions, kv, o.page_tokens);
}

namespace {

const char* rope_style_name(kvcache::RopeStyle s) {
  switch (s) {
    case kvcache::RopeStyle::none:
      return "none";
    case kvcache::RopeStyle::adjacent_pairs:
      return "adjacent_pairs";
    case kvcache::RopeStyle::half_split:
      return "half_split";
  }
  return "?";
}

}  // namespace

nlohmann::json model_json(const LoadedModel& m) {
  const kvcache::llama::ModelWeights& w = *m.weights;
  const kvcache::llama::ModelConfig& c = w.config;
  nlohmann::json types = nlohmann::json::object();
  for (const auto& [type, count] : w.tensor_types)
    types[std::string(kvcache::llama::ggml_type_name(type))] = count;
  nlohmann::json j;
  j["path"] = w.path.string();
  j["format"] = w.format;
  j["architecture"] = std::string(kvcache::llama::architecture_name(c.arch));
  j["tensor_types"] = std::move(types);
  j["weight_bytes"] = w.weight_bytes();
  j["n_layers"] = c.n_layers;
  j["dim"] = c.dim;
  j["hidden_dim"] = c.hidden_dim;
  j["n_heads"] = c.n_heads;
  j["n_kv_heads"] = c.n_kv_heads;
  j["vocab_size"] = c.vocab_size;
  j["context_length"] = c.seq_len;
  j["tied_output"] = c.shared_classifier;
  j["rope"] = {{"style", rope_style_name(c.rope.style)},
               {"theta", c.rope.theta},
               {"freq_factors", !c.rope.freq_factors.empty()}};
  j["rms_eps"] = c.rms_eps;
  j["tokenizer"] = {{"model", std::string(m.tokenizer->model())},
                    {"pre", std::string(m.tokenizer->pre())},
                    {"vocab_size", m.tokenizer->vocab_size()},
                    {"bos", m.tokenizer->bos()},
                    {"eos", m.tokenizer->eos()},
                    {"add_bos", m.tokenizer->add_bos_default()},
                    {"source", m.tokenizer_source}};
  return j;
}

std::string model_summary(const LoadedModel& m) {
  const kvcache::llama::ModelWeights& w = *m.weights;
  const kvcache::llama::ModelConfig& c = w.config;
  return fmt::format(
      "{} {}, {} layers, dim {}, {} heads ({} KV), vocab {}, rope {} theta {}{}; tensors {}; {}", w.format,
      kvcache::llama::architecture_name(c.arch), c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.vocab_size,
      rope_style_name(c.rope.style), c.rope.theta,
      c.rope.freq_factors.empty() ? "" : " with frequency factors", w.tensor_type_summary(),
      fmt::format("tokenizer {}{}", m.tokenizer->model(),
                  m.tokenizer->pre().empty() ? std::string() : " (" + std::string(m.tokenizer->pre()) + ")"));
}

}  // namespace kvstream
