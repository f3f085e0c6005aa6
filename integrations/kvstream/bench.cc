#include "bench.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "kvcache/error.h"
#include "llama/decode_bench.h"
#include "text_output.h"

namespace kvstream {

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Decode speed: prefill tokens/s, then decode tokens/s at each --depths (tokens fed before the timed "
      "steps), with the bytes a step reads (weight matrices in their own type, classifier included, + the "
      "KV held) and the bandwidth that is as a ratio to a STREAM triad measured in this process. Token "
      "ids are random (seeded): made for random-weight models (bench/make_model). Human table on stdout, "
      "or --json; progress on stderr when it is a terminal.");
  // Bench defaults: the KV type and budget a real deployment would use.
  o.common.kv_dtype = "f16";
  o.common.budget = 1024;
  add_common_options(*cmd, o.common);
  cmd->add_option("--depths", o.depths,
                  "comma-separated stream depths at which decode is timed, run in ascending order on one "
                  "stream. Depths are reached one token at a time unless --fill-prefill; 16384 on a 1B "
                  "model on 2 cores takes an hour that way (see --max-seconds)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--prompt-tokens", o.prompt_tokens,
                  "tokens of the timed prefill on an empty cache (batched, Decoder::prefill); 0 = none")
      ->check(CLI::Range(0u, 1u << 20))
      ->capture_default_str();
  cmd->add_option("--steps", o.steps, "timed decode steps at each depth")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  cmd->add_flag("--fill-prefill", o.fill_prefill,
                "reach each depth with batched prefill while nothing is evicted (exact: the cache equals "
                "single steps'), then single steps: the full policy batches every token, sinks only the "
                "first --budget. Default: one step per token, as streaming generation does");
  cmd->add_option("--max-seconds", o.max_seconds,
                  "stop filling once the run has taken this long; depths not reached are reported as such")
      ->check(CLI::Range(0.001, 1e7))
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed of the random token ids")->capture_default_str();
  cmd->add_option("--triad-mib", o.triad_mib,
                  "working set of the STREAM triad in MiB (far above the last-level cache); 0 = no triad")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  cmd->add_flag("--json", o.json, "print one JSON object on stdout instead of the table");
  return cmd;
}

namespace {

double load_average() {
  double load[1] = {0};
  return ::getloadavg(load, 1) == 1 ? load[0] : -1;
}

nlohmann::json depth_json(const kvcache::llama::DepthResult& d) {
  nlohmann::json j{{"requested_depth", d.requested_depth}, {"reached", d.reached}};
  if (!d.reached) return j;
  j["depth"] = d.depth;
  j["tokens_kept"] = d.tokens_kept;
  j["kv_bytes"] = d.kv_bytes;
  j["bytes_per_token"] = d.bytes_per_token;
  j["fill_seconds"] = d.fill_seconds;
  j["seconds"] = d.seconds;
  j["tokens_per_second"] = d.tokens_per_second;
  j["gbps"] = d.gbps;
  j["triad_ratio"] = d.triad_ratio;
  j["cpu_seconds"] = d.cpu_seconds;
  j["gbps_cpu"] = d.gbps_cpu;
  return j;
}

void print_table(const BenchOptions& o, const LoadedModel& m, const kvcache::llama::DecodeBenchResult& r,
                 int threads, double load) {
  const double mib = 1024.0 * 1024.0;
  std::printf("model %s\n", model_summary(m).c_str());
  std::printf("%s\n", policy_summary(o.common, m.weights->config).c_str());
  std::printf("threads %d, load average %.2f at start; weights read per token %.1f MiB; ", threads, load,
              static_cast<double>(r.weight_bytes) / mib);
  if (r.triad_gbps > 0) {
    std::printf("STREAM triad %.2f GB/s (%.0f MiB)\n", r.triad_gbps, o.triad_mib);
  } else {
    std::printf("no triad\n");
  }
  if (r.prompt_tokens > 0) {
    std::printf("prefill %u tokens in %.3f s: %.1f tok/s\n", r.prompt_tokens, r.prefill_seconds,
                r.prefill_tokens_per_second);
  }
  std::printf("decode, %u steps per depth, depth reached by %s:\n", r.decode_steps,
              r.fill_prefill ? "prefill batches (single steps once evicting)" : "single steps");
  std::printf("%8s %7s %9s %13s %9s %8s %9s %9s %9s\n", "depth", "kept", "KV MiB", "MiB/token", "tok/s",
              "GB/s", "of triad", "GB/s cpu", "fill s");
  for (const auto& d : r.depths) {
    if (!d.reached) {
      std::printf("%8llu  not reached within --max-seconds %g\n",
                  static_cast<unsigned long long>(d.requested_depth), o.max_seconds);
      continue;
    }
    std::printf("%8llu %7u %9.1f %13.1f %9.2f %8.2f %9.3f %9.2f %9.1f\n",
                static_cast<unsigned long long>(d.depth), d.tokens_kept,
                static_cast<double>(d.kv_bytes) / mib, static_cast<double>(d.bytes_per_token) / mib,
                d.tokens_per_second, d.gbps, d.triad_ratio, d.gbps_cpu, d.fill_seconds);
  }
  std::printf("total %.1f s (GB/s cpu: bytes per CPU second of the %d threads, the rate while they ran)\n",
              r.total_seconds, threads);
}

}  // namespace

int run_bench(const BenchOptions& o) {
  const LoadedModel m = load_model(o.common);
  const int threads = thread_count(o.common);
  const double load = load_average();
  kvcache::llama::DecodeBenchOptions b;
  b.depths = o.depths;
  b.prompt_tokens = o.prompt_tokens;
  b.decode_steps = o.steps;
  b.fill_prefill = o.fill_prefill;
  b.max_seconds = o.max_seconds;
  b.seed = o.seed;
  b.threads = threads;
  b.triad_bytes = static_cast<std::size_t>(o.triad_mib * 1024 * 1024);
  if (o.depths.empty()) throw kvcache::InvalidArgument("--depths: give at least one depth");
  if (stderr_is_tty()) {
    b.progress = [](std::string_view phase, std::uint64_t done, std::uint64_t total) {
      std::fprintf(stderr, "\r[kvstream bench] %-14.*s %llu/%llu   ", static_cast<int>(phase.size()),
                   phase.data(), static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(total));
      std::fflush(stderr);
    };
  }
  const kvcache::llama::DecodeBenchResult r =
      kvcache::llama::run_decode_bench(m.weights, cache_options(o.common, m.weights->config), b);
  if (stderr_is_tty()) std::fprintf(stderr, "\r%s\r", std::string(60, ' ').c_str());

  if (o.json) {
    nlohmann::json j = policy_json(o.common, m.weights->config);
    j["model"] = model_json(m);
    j["threads"] = threads;
    j["weights"] = o.common.weights;
    j["load_average"] = load;
    j["weight_bytes"] = r.weight_bytes;
    j["triad_gbps"] = r.triad_gbps;
    j["triad_bytes"] = b.triad_bytes;
    j["prefill"] = {{"tokens", r.prompt_tokens},
                    {"seconds", r.prefill_seconds},
                    {"tokens_per_second", r.prefill_tokens_per_second}};
    j["decode_steps"] = r.decode_steps;
    j["fill"] = r.fill_prefill ? "prefill" : "steps";
    j["seed"] = o.seed;
    nlohmann::json depths = nlohmann::json::array();
    for (const auto& d : r.depths) depths.push_back(depth_json(d));
    j["depths"] = std::move(depths);
    j["total_seconds"] = r.total_seconds;
    std::printf("%s\n", j.dump().c_str());
  } else {
    print_table(o, m, r, threads, load);
  }
  return 0;
}

}  // namespace kvstream
