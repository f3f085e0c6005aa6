#include "common_options.h"

#include <fmt/format.h>

#include "kvcache/dtype.h"
#include "llama/model_paths.h"

namespace kvstream {

void add_common_options(CLI::App& app, CommonOptions& o) {
  app.add_option(
      "--model", o.model,
      "llama2.c checkpoint (.bin). Default: $KVCACHE_MODEL, else models/stories260K.bin in the repo, "
      "else ../shared/models/stories260K.bin next to the repo");
  app.add_option(
      "--tokenizer", o.tokenizer,
      "llama2.c tokenizer (.bin). Default: $KVCACHE_TOKENIZER, else models/tok512.bin in the repo, "
      "else ../shared/models/tok512.bin next to the repo");
  app.add_option(
         "--policy", o.policy,
         "KV retention: full (keep everything), window (last B tokens), sinks (first S tokens + last B-S, "
         "StreamingLLM)")
      ->check(CLI::IsMember({"full", "window", "sinks"}))
      ->capture_default_str();
  app.add_option("--budget", o.budget, "tokens kept per layer, sinks included (window and sinks policies)")
      ->check(CLI::Range(1u, 1u << 30))
      ->capture_default_str();
  app.add_option("--sinks", o.sinks,
                 "initial tokens pinned forever (sinks policy); the window is budget - sinks")
      ->capture_default_str();
  app.add_option("--page-tokens", o.page_tokens, "tokens per KV page")
      ->check(CLI::Range(1u, 1u << 16))
      ->capture_default_str();
  app.add_option("--kv-dtype", o.kv_dtype, "storage type of cached keys and values")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
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
}

kvcache::llama::CacheOptions cache_options(const CommonOptions& o) {
  kvcache::llama::CacheOptions c;
  const kvcache::PolicyKind kind = kvcache::parse_policy(o.policy);
  c.policy = kind == kvcache::PolicyKind::full     ? kvcache::PolicyConfig::full()
             : kind == kvcache::PolicyKind::window ? kvcache::PolicyConfig::window(o.budget)
                                                   : kvcache::PolicyConfig::streaming(o.sinks, o.budget);
  c.page_tokens = o.page_tokens;
  c.dtype = kvcache::parse_dtype(o.kv_dtype);
  c.positions =
      o.positions == "absolute" ? kvcache::PositionMode::absolute : kvcache::PositionMode::reindexed;
  c.max_kv_bytes = static_cast<std::size_t>(o.max_kv_mb * 1024.0 * 1024.0);
  c.attention = kvcache::llama::parse_attention_kernel(o.attention);
  return c;
}

LoadedModel load_model(const CommonOptions& o) {
  const auto model = kvcache::llama::resolve_model(o.model);
  const auto tok = kvcache::llama::resolve_tokenizer(o.tokenizer);
  auto checkpoint = kvcache::llama::Checkpoint::load(model.path);
  auto tokenizer = kvcache::llama::Tokenizer::load(tok.path, checkpoint->config().vocab_size);
  return {std::move(checkpoint), std::move(tokenizer), model.source, tok.source};
}

nlohmann::json policy_json(const CommonOptions& o) {
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
  } else {
    j["budget"] = o.budget;
    j["sinks"] = o.sinks;
    j["window"] = o.budget > o.sinks ? o.budget - o.sinks : 0;
  }
  j["positions"] = o.positions;
  j["kv_dtype"] = o.kv_dtype;
  j["page_tokens"] = o.page_tokens;
  j["attention"] = o.attention;
  return j;
}

std::string policy_summary(const CommonOptions& o) {
  std::string p;
  if (o.policy == "full") {
    p = "full (no eviction)";
  } else if (o.policy == "window") {
    p = fmt::format("window (last {} tokens)", o.budget);
  } else {
    p = fmt::format("sinks ({} sinks + {} window = budget {})", o.sinks,
                    o.budget > o.sinks ? o.budget - o.sinks : 0, o.budget);
  }
  return fmt::format("policy {}, {} positions, {} KV, {}-token pages", p, o.positions, o.kv_dtype,
                     o.page_tokens);
}

}  // namespace kvstream
