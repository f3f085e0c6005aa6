#include "generate.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "kvcache/error.h"
#include "llama/model.h"
#include "llama/sampler.h"
#include "text_output.h"

namespace kvstream {

using Clock = std::chrono::steady_clock;

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& o) {
  CLI::App* cmd = app.add_subcommand("generate",
                                     "Stream generated text to stdout (flushed per token), forever unless -n "
                                     "is given. Cache statistics go to "
                                     "stderr. Ctrl-C stops cleanly with a summary (exit status 0).");
  add_common_options(*cmd, o.common);
  cmd->add_option("-n,--n-tokens", o.n, "tokens to generate after the prompt; 0 = until interrupted")
      ->capture_default_str();
  cmd->add_option("--temperature", o.temperature, "sampling temperature; 0 = greedy (argmax)")
      ->check(CLI::Range(0.0f, 100.0f))
      ->capture_default_str();
  cmd->add_option("--top-p", o.top_p, "nucleus sampling mass in (0, 1); 1 = sample the full distribution")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  cmd->add_option("--seed", o.seed,
                  "RNG seed for reproducible sampling (default: random, shown in the summary)");
  cmd->add_option("--prompt", o.prompt,
                  "text to start from (after BOS); it is echoed to stdout before the continuation");
  cmd->add_flag("-q,--quiet", o.quiet, "no statistics on stderr (errors are still reported)");
  cmd->add_option("--stats-every", o.stats_seconds,
                  "seconds between statistics lines on stderr; 0 = summary only")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  cmd->add_option("--stats-tokens", o.stats_tokens,
                  "print statistics every this many generated tokens instead of by time; 0 = off")
      ->capture_default_str();
  return cmd;
}

namespace {

// Running counters for the statistics lines.
struct Progress {
  Clock::time_point start = Clock::now();
  Clock::time_point last = start;  ///< time of the previous stats line
  std::uint64_t last_tokens = 0;   ///< tokens generated at the previous stats line
};

void print_stats(const char* tag, const kvcache::llama::Decoder& dec, std::uint64_t generated, Progress& p) {
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - p.last).count();
  const double total = std::chrono::duration<double>(now - p.start).count();
  const kvcache::StreamStats s = dec.cache().stats();
  const double rate_now = since > 0 ? static_cast<double>(generated - p.last_tokens) / since : 0.0;
  const double rate_avg = total > 0 ? static_cast<double>(generated) / total : 0.0;
  std::fprintf(
      stderr,
      "%s[kvstream %s] generated %llu | kept %u (%u pinned) | KV %s (peak %s) | %.0f tok/s (avg %.0f)\n",
      stdout_is_tty() ? "\n" : "", tag, static_cast<unsigned long long>(generated), s.tokens_kept,
      s.tokens_pinned, human_bytes(s.kv_bytes).c_str(), human_bytes(s.kv_bytes_peak).c_str(), rate_now,
      rate_avg);
  p.last = now;
  p.last_tokens = generated;
}

}  // namespace

int run_generate(const GenerateOptions& o) {
  const LoadedModel m = load_model(o.common);
  kvcache::llama::Decoder dec(m.weights, cache_options(o.common, m.weights->config));
  const std::uint64_t seed =
      o.seed ? *o.seed : (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  kvcache::llama::Sampler sampler({o.temperature, o.top_p, seed});
  if (!o.quiet) {
    std::fprintf(stderr, "[kvstream] model %s (%s): %s\n[kvstream] %s; seed %llu\n",
                 m.weights->path.string().c_str(), m.model_source.c_str(), model_summary(m).c_str(),
                 policy_summary(o.common, m.weights->config).c_str(), static_cast<unsigned long long>(seed));
  }

  install_signal_handlers();
  TextOut out;
  const std::vector<std::int32_t> prompt =
      m.tokenizer->encode(o.prompt, m.tokenizer->add_bos_default(), false, false);
  bool open = true;
  for (std::size_t i = 1; i < prompt.size() && open; ++i)
    open = out.write(m.tokenizer->decode(prompt[i - 1], prompt[i]));

  Progress progress;
  std::span<const float> logits = dec.prefill(prompt);
  std::int32_t prev = prompt.back();
  std::uint64_t generated = 0;
  const auto stats_period = std::chrono::duration<double>(o.stats_seconds);
  while (open && !interrupted() && (o.n == 0 || generated < o.n)) {
    const std::int32_t next = sampler.sample(logits);
    // BOS or EOS means the model ended a text and starts another: show it as a blank line.
    const bool boundary = next == m.tokenizer->bos() || next == m.tokenizer->eos();
    open = out.write(boundary ? std::string_view("\n\n") : m.tokenizer->decode(prev, next));
    ++generated;
    if (!o.quiet) {
      const bool due = o.stats_tokens > 0
                           ? generated % o.stats_tokens == 0
                           : o.stats_seconds > 0 && Clock::now() - progress.last >= stats_period;
      if (due) print_stats("stats", dec, generated, progress);
    }
    if (o.n != 0 && generated == o.n) break;
    logits = dec.step(next);
    prev = next;
  }
  if (open) out.write("\n");

  const double secs = std::chrono::duration<double>(Clock::now() - progress.start).count();
  if (!o.quiet || interrupted()) {  // Ctrl-C always gets its summary
    const kvcache::StreamStats s = dec.cache().stats();
    std::fprintf(
        stderr,
        "%s[kvstream summary] %s: generated %llu tokens in %.2f s (%.0f tok/s) | seen %llu, kept %u, "
        "evicted %llu | KV %s, peak %s | seed %llu\n",
        stdout_is_tty() ? "\n" : "", interrupted() ? "interrupted" : (open ? "done" : "stdout closed"),
        static_cast<unsigned long long>(generated), secs,
        secs > 0 ? static_cast<double>(generated) / secs : 0.0,
        static_cast<unsigned long long>(s.tokens_seen), s.tokens_kept,
        static_cast<unsigned long long>(s.tokens_evicted), human_bytes(s.kv_bytes).c_str(),
        human_bytes(s.kv_bytes_peak).c_str(), static_cast<unsigned long long>(seed));
  }
  return 0;
}

}  // namespace kvstream
