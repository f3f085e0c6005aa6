#include "llama/decode_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <random>
#include <string>

#include "kvcache/error.h"
#include "kvcache/measure/triad.h"

namespace kvcache::llama {
namespace {

using Clock = std::chrono::steady_clock;

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void validate(const DecodeBenchOptions& o) {
  if (o.depths.empty()) throw InvalidArgument("decode bench: depths is empty (give at least one depth)");
  if (o.decode_steps < 1) throw InvalidArgument("decode bench: decode_steps must be at least 1");
  if (!(o.max_seconds > 0)) throw InvalidArgument("decode bench: max_seconds must be positive");
  if (o.threads < 1) {
    throw InvalidArgument("decode bench: threads must be at least 1, got " + std::to_string(o.threads));
  }
}

// Token ids drawn uniformly from the vocabulary; a fixed-size buffer refilled in place, so the
// loops that feed tokens allocate nothing.
class RandomTokens {
 public:
  RandomTokens(std::uint32_t vocab, std::uint64_t seed)
      : rng_(seed), dist_(0, static_cast<std::int32_t>(vocab) - 1) {}
  std::int32_t next() { return dist_(rng_); }
  std::span<const std::int32_t> batch(std::size_t n) {
    n = std::min(n, buf_.size());
    for (std::size_t i = 0; i < n; ++i) buf_[i] = next();
    return std::span(buf_).first(n);
  }

 private:
  std::mt19937_64 rng_;
  std::uniform_int_distribution<std::int32_t> dist_;
  std::vector<std::int32_t> buf_ = std::vector<std::int32_t>(Decoder::kMaxBatch);
};

// Feeds tokens until `dec` has seen `target` tokens or `deadline` passes; returns whether the
// target was reached.
bool fill(Decoder& dec, RandomTokens& tokens, std::uint64_t target, bool use_prefill,
          Clock::time_point deadline, const DecodeBenchOptions& o, std::string_view phase) {
  const std::uint64_t start = dec.cache().stats().tokens_seen;
  std::uint64_t seen = start;
  while (seen < target) {
    if (Clock::now() >= deadline) return false;
    // One batch between progress reports and deadline checks: tens of seconds at most even on a
    // 1B model stepping one token at a time on two cores.
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(target - seen, Decoder::kMaxBatch));
    if (use_prefill) {
      dec.prefill(tokens.batch(n));
    } else {
      for (std::size_t i = 0; i < n; ++i) dec.step(tokens.next());
    }
    seen += n;
    if (o.progress) o.progress(phase, seen - start, target - start);
  }
  return true;
}

}  // namespace

DecodeBenchResult run_decode_bench(std::shared_ptr<const ModelWeights> model, const CacheOptions& options,
                                   const DecodeBenchOptions& o) {
  validate(o);
  const auto run_start = Clock::now();
  const auto deadline =
      run_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.max_seconds));
  DecodeBenchResult r;
  r.weight_bytes = model->step_matrix_bytes();
  r.prompt_tokens = o.prompt_tokens;
  r.decode_steps = o.decode_steps;
  r.fill_prefill = o.fill_prefill;
  RandomTokens tokens(model->config.vocab_size, o.seed);

  {
    Decoder dec(model, options);
    // Untimed: the first pass over a memory-mapped model faults its pages in.
    dec.step(tokens.next());
    if (o.prompt_tokens > 0) {
      Decoder fresh(model, options);
      std::vector<std::int32_t> prompt(o.prompt_tokens);
      for (std::int32_t& t : prompt) t = tokens.next();
      if (o.progress) o.progress("prefill", 0, o.prompt_tokens);
      const auto t0 = Clock::now();
      fresh.prefill(prompt);
      r.prefill_seconds = seconds_since(t0);
      r.prefill_tokens_per_second = o.prompt_tokens / r.prefill_seconds;
      if (o.progress) o.progress("prefill", o.prompt_tokens, o.prompt_tokens);
    }
  }

  std::vector<std::uint64_t> depths = o.depths;
  std::sort(depths.begin(), depths.end());
  depths.erase(std::unique(depths.begin(), depths.end()), depths.end());
  {
    Decoder dec(model, options);
    bool stopped = false;
    for (std::uint64_t want : depths) {
      DepthResult d;
      d.requested_depth = want;
      const std::string label = std::to_string(want);
      const auto t_fill = Clock::now();
      if (!stopped && fill(dec, tokens, want, o.fill_prefill, deadline, o, "fill " + label)) {
        d.fill_seconds = seconds_since(t_fill);
        const StreamStats before = dec.cache().stats();
        d.depth = before.tokens_seen;
        d.tokens_kept = before.tokens_kept;
        const std::string phase = "decode " + label;
        const double cpu0 = process_cpu_seconds();
        const auto t0 = Clock::now();
        for (std::uint32_t i = 0; i < o.decode_steps; ++i) dec.step(tokens.next());
        d.seconds = seconds_since(t0);
        d.cpu_seconds = process_cpu_seconds() - cpu0;
        if (o.progress) o.progress(phase, o.decode_steps, o.decode_steps);
        d.kv_bytes = (before.kv_bytes + dec.cache().stats().kv_bytes) / 2;
        d.bytes_per_token = r.weight_bytes + d.kv_bytes;
        d.tokens_per_second = o.decode_steps / d.seconds;
        d.gbps = static_cast<double>(d.bytes_per_token) * d.tokens_per_second / 1e9;
        if (d.cpu_seconds > 0) {
          d.gbps_cpu =
              static_cast<double>(d.bytes_per_token) * o.decode_steps / (d.cpu_seconds / o.threads) / 1e9;
        }
        d.reached = true;
      } else {
        stopped = true;  // the time limit: later depths are deeper still
      }
      r.depths.push_back(d);
    }
  }

  if (o.triad_bytes > 0) {
    if (o.progress) o.progress("triad", 0, 1);
    r.triad_gbps = measure::triad_bandwidth(o.triad_bytes, o.threads) / 1e9;
    for (DepthResult& d : r.depths)
      if (d.reached) d.triad_ratio = d.gbps / r.triad_gbps;
    if (o.progress) o.progress("triad", 1, 1);
  }
  r.total_seconds = seconds_since(run_start);
  return r;
}

}  // namespace kvcache::llama
