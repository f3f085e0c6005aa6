#include "perplexity.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kvcache/error.h"
#include "llama/model.h"
#include "scoring.h"
#include "text_output.h"
#include "token_nll_file.h"

namespace kvstream {

using Clock = std::chrono::steady_clock;

CLI::App* add_ppl_command(CLI::App& app, PplOptions& o) {
  CLI::App* cmd =
      app.add_subcommand("ppl",
                         "Streaming perplexity: feed a file token by token through the cache under the "
                         "chosen policy; the first token "
                         "is context and every later token is scored once. Give exactly one of --text, "
                         "--tokens. A progress bar goes to stderr when it is a terminal.");
  add_common_options(*cmd, o.common);
  add_token_input_options(*cmd, o.input,
                          "use at most N tokens of the file, the context token included; 0 = all");
  cmd->add_option("--segment", o.segment, "scored tokens per reported segment")
      ->check(CLI::Range(1u, 1u << 30))
      ->capture_default_str();
  cmd->add_option("--nll-out", o.nll_out,
                  "also write every scored token's negative log-likelihood to this CSV (position,token,nll), "
                  "the input of `kvstream compare`");
  cmd->add_flag("--json", o.json, "print one JSON object on stdout instead of the human report");
  return cmd;
}

namespace {

void draw_progress(std::uint64_t done, std::uint64_t total, double nll_sum, double secs) {
  constexpr int kWidth = 30;
  const int filled = total ? static_cast<int>(kWidth * done / total) : kWidth;
  std::fprintf(stderr, "\r[%s%s] %llu/%llu  ppl %.3f  %.0f tok/s ",
               std::string(static_cast<std::size_t>(filled), '#').c_str(),
               std::string(static_cast<std::size_t>(kWidth - filled), ' ').c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
               done ? std::exp(nll_sum / static_cast<double>(done)) : 0.0,
               secs > 0 ? static_cast<double>(done) / secs : 0.0);
  std::fflush(stderr);
}

// The tokens pinned at the end of the run and why: original position, token, reason, and the
// detector's evidence (heads where the sink rule holds, accumulated attention).
nlohmann::json pinned_json(const kvcache::llama::Decoder& dec, const kvcache::llama::TextTokenizer& tok) {
  nlohmann::json out = nlohmann::json::array();
  for (const kvcache::KeptToken& t : dec.cache().tokens()) {
    if (t.meta.pin == kvcache::PinReason::none) continue;
    out.push_back({{"pos", t.meta.pos},
                   {"token", t.meta.token},
                   {"piece", std::string(tok.piece(t.meta.token))},
                   {"reason", pin_reason_name(t.meta.pin)},
                   {"sink_heads", t.meta.sink_heads},
                   {"score", t.meta.score}});
  }
  return out;
}

void print_pinned(const kvcache::llama::Decoder& dec, const kvcache::llama::TextTokenizer& tok) {
  const nlohmann::json pinned = pinned_json(dec, tok);
  if (pinned.empty()) return;
  std::printf("pinned at the end (position, token, reason, sink heads of %u, accumulated attention):\n",
              dec.config().n_layers * dec.config().n_heads);
  for (const auto& p : pinned) {
    std::printf("  %8lld  %-12s  %-12s  %4u  %10.2f\n", static_cast<long long>(p["pos"].get<std::int64_t>()),
                nlohmann::json(p["piece"].get<std::string>()).dump().c_str(),
                p["reason"].get<std::string>().c_str(), p["sink_heads"].get<unsigned>(),
                p["score"].get<double>());
  }
}

}  // namespace

int run_ppl(const PplOptions& o) {
  const LoadedModel m = load_model(o.common);
  const std::vector<std::int32_t> tokens = load_tokens(o.input, m, "ppl", 2);

  kvcache::llama::Decoder dec(m.weights, cache_options(o.common, m.weights->config));
  install_signal_handlers();
  const bool progress = stderr_is_tty();
  const std::uint64_t n_scored = tokens.size() - 1;
  const auto start = Clock::now();
  auto last_draw = start;
  ScoreProgress draw;
  if (progress) {
    draw = [&](std::uint64_t done, double nll_sum) {
      if (Clock::now() - last_draw <= std::chrono::milliseconds(100)) return;
      last_draw = Clock::now();
      draw_progress(done, n_scored, nll_sum, std::chrono::duration<double>(last_draw - start).count());
    };
  }
  const StreamScore r = score_stream(dec, tokens, o.segment, draw, !o.nll_out.empty());
  if (progress) std::fprintf(stderr, "\r%s\r", std::string(80, ' ').c_str());
  if (r.scored == 0) throw kvcache::Error("interrupted before any token was scored");
  if (!o.nll_out.empty()) write_token_nll_csv(o.nll_out, tokens, r.token_nll);
  const std::uint64_t scored = r.scored;
  const std::vector<Segment>& segments = r.segments;
  const double secs = r.seconds;
  const double ppl = r.ppl();
  const kvcache::StreamStats& stats = r.stats;
  const double tps = r.tokens_per_second();
  if (o.json) {
    nlohmann::json j = policy_json(o.common, m.weights->config);
    j["model"] = model_json(m);
    j["ppl"] = ppl;
    j["nll_mean"] = r.nll_mean();
    j["tokens_scored"] = scored;
    j["tokens_total"] = tokens.size();
    j["complete"] = scored == n_scored;
    j["source"] = o.input.source();
    j["source_kind"] = o.input.source_kind();
    j["kv_bytes_peak"] = stats.kv_bytes_peak;
    j["kv_staging_bytes"] = stats.staging_bytes;
    j["kv_bytes_used"] = stats.kv_bytes_peak + stats.staging_bytes;
    j["tokens_kept"] = stats.tokens_kept;
    j["seconds"] = secs;
    j["tokens_per_second"] = tps;
    j["segment_tokens"] = o.segment;
    if (!o.nll_out.empty()) j["nll_out"] = o.nll_out;
    nlohmann::json segs = nlohmann::json::array();
    for (const Segment& s : segments) segs.push_back({{"begin", s.begin}, {"end", s.end}, {"ppl", s.ppl()}});
    j["segments"] = std::move(segs);
    j["pinned"] = pinned_json(dec, *m.tokenizer);
    if (dec.detector() != nullptr) j["calibrated_pairs"] = dec.calibrated_pairs();
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("perplexity %.4f over %llu scored tokens%s\n", ppl, static_cast<unsigned long long>(scored),
                scored == n_scored ? "" : " (interrupted)");
    std::printf("model %s\n", model_summary(m).c_str());
    std::printf("%s\n", policy_summary(o.common, m.weights->config).c_str());
    const std::string staging = stats.staging_bytes == 0 ? ""
                                                         : " + " + human_bytes(stats.staging_bytes) +
                                                               " f16 keys of q4 pages being filled";
    std::printf("KV peak %s%s, kept %u tokens at the end, %.0f tok/s (%.2f s)\n",
                human_bytes(stats.kv_bytes_peak).c_str(), staging.c_str(), stats.tokens_kept, tps, secs);
    std::printf("segment ppl (per %u scored tokens):\n", o.segment);
    for (const Segment& s : segments) {
      std::printf("  [%6llu, %6llu)  %8.3f\n", static_cast<unsigned long long>(s.begin),
                  static_cast<unsigned long long>(s.end), s.ppl());
    }
    print_pinned(dec, *m.tokenizer);
  }
  return scored == n_scored ? 0 : 130;
}

}  // namespace kvstream
