#include "inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "kvcache/error.h"
#include "llama/model.h"
#include "plot_script.h"
#include "text_output.h"

namespace kvstream {

CLI::App* add_inspect_command(CLI::App& app, InspectOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Attention diagnostics: feed a text through the model with the sink detector on, record every "
      "query's attention in every (layer, head), and write DIR/attention_layer<L>.png heatmaps (query x "
      "key, sinks marked on the key axis), DIR/sinks_overview.png, DIR/sinks.json and a sink table on "
      "stdout (which positions are sinks, in which heads, how much attention they take, initial or "
      "hidden). Raw data: DIR/attention_layer<L>.f32 described by DIR/inspect.json.");
  o.common.policy = "full";  // inspect's default: every key stays, so each row is complete
  add_common_options(*cmd, o.common);
  o.input.max_tokens = 512;
  add_token_input_options(
      *cmd, o.input,
      fmt::format("use at most N tokens of the file, BOS included; 0 = all (at most {}: the dump holds "
                  "layers x heads x N x N floats)",
                  kMaxInspectTokens));
  cmd->add_option("--out", o.out_dir, "output directory (created if missing; files are overwritten)")
      ->required();
  cmd->add_option("--min-age", o.min_age,
                  "tokens that must follow a token before it can be reported as a sink: the newest tokens "
                  "always draw many times the uniform share (local attention), which is not a sink; the "
                  "hidden-sinks policy likewise judges a token only when it leaves the window")
      ->capture_default_str();
  cmd->add_option("--sink-epsilon", o.sink_epsilon,
                  "threshold of Gu et al.'s sink metric (ICLR 2025): the share of heads whose mean attention "
                  "on token 0, over the queries after it, exceeds it; reported per layer")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--plot-script", o.plot_script,
                  "matplotlib script drawing the PNGs from inspect.json (default: scripts/plot_inspect.py "
                  "in the source tree kvstream was built from)");
  cmd->add_option("--python", o.python,
                  "Python interpreter for the plots (default: python3 from PATH, then /usr/bin/python3, the "
                  "first with matplotlib)");
  cmd->add_flag("--no-plot", o.no_plot, "write the data and sinks.json only");
  return cmd;
}

namespace {

constexpr float kNotVisible = std::numeric_limits<float>::quiet_NaN();

// What was recorded while decoding: every query's attention row and, per key, the attention it
// received as a multiple of the uniform share 1/N (N = keys the query saw), summed over queries.
struct Recording {
  std::uint32_t n_layers = 0, n_heads = 0, n_tokens = 0;
  std::vector<float> attention;     ///< [layer][head][query][key position]; NaN = key not visible
  std::vector<double> share_sum;    ///< [layer][head][key position]: sum over queries of p * N
  std::vector<std::uint32_t> seen;  ///< [key position]: queries that saw the key (same in every head)

  std::size_t index(std::uint32_t l, std::uint32_t h, std::uint32_t q, std::int64_t k) const {
    return ((std::size_t{l} * n_heads + h) * n_tokens + q) * n_tokens + static_cast<std::size_t>(k);
  }
  float& at(std::uint32_t l, std::uint32_t h, std::uint32_t q, std::int64_t k) {
    return attention[index(l, h, q, k)];
  }
  float at(std::uint32_t l, std::uint32_t h, std::uint32_t q, std::int64_t k) const {
    return attention[index(l, h, q, k)];
  }
  double mean_share(std::uint32_t l, std::uint32_t h, std::int64_t k) const {
    const auto kk = static_cast<std::size_t>(k);
    return seen[kk] ? share_sum[(std::size_t{l} * n_heads + h) * n_tokens + kk] / seen[kk] : 0.0;
  }
};

Recording record(kvcache::llama::Decoder& dec, std::span<const std::int32_t> tokens) {
  Recording r;
  r.n_layers = dec.config().n_layers;
  r.n_heads = dec.config().n_heads;
  r.n_tokens = static_cast<std::uint32_t>(tokens.size());
  r.attention.assign(std::size_t{r.n_layers} * r.n_heads * r.n_tokens * r.n_tokens, kNotVisible);
  r.share_sum.assign(std::size_t{r.n_layers} * r.n_heads * r.n_tokens, 0.0);
  r.seen.assign(r.n_tokens, 0);
  std::uint32_t query = 0;
  std::vector<std::int64_t> position;  // cache index -> original position, for the current query
  dec.set_attention_observer([&](std::uint32_t layer, std::span<const float> mass) {
    if (layer == 0) {
      // Under a policy that evicts or pins, cache order is not stream order: map it once per query
      // (the kept set is the same in every layer).
      position.clear();
      for (const kvcache::KeptToken& t : dec.cache().tokens()) {
        position.push_back(t.meta.pos);
        ++r.seen[static_cast<std::size_t>(t.meta.pos)];
      }
    }
    const std::size_t n = position.size();
    for (std::uint32_t h = 0; h < r.n_heads; ++h) {
      for (std::size_t i = 0; i < n; ++i) {
        const float p = mass[h * n + i];
        r.at(layer, h, query, position[i]) = p;
        r.share_sum[(std::size_t{layer} * r.n_heads + h) * r.n_tokens +
                    static_cast<std::size_t>(position[i])] += double{p} * static_cast<double>(n);
      }
    }
  });
  for (; query < r.n_tokens; ++query) dec.step(tokens[query]);
  dec.set_attention_observer({});
  return r;
}

// A token where the detector's rule holds at the end in at least one (layer, head).
struct Sink {
  kvcache::KeptToken token;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> heads;  ///< (layer, head) pairs
  double mean_share = 0;  ///< mean over its sink heads of the attention received / uniform share
  double max_share = 0;   ///< the largest of those
  bool initial = false;   ///< among the first --sinks positions
};

// Tokens where the rule holds at the end in at least one head, in position order, and how many
// more it holds for among the `min_age` newest tokens (left out, see InspectOptions::min_age).
struct SinkScan {
  std::vector<Sink> sinks;
  std::uint32_t recent_left_out = 0;
};

SinkScan find_sinks(kvcache::llama::Decoder& dec, const Recording& r, std::uint32_t initial_sinks,
                    std::uint32_t min_age) {
  SinkScan scan;
  std::vector<Sink>& sinks = scan.sinks;
  const std::vector<kvcache::KeptToken> kept = dec.cache().tokens();
  for (std::uint32_t i = 0; i < kept.size(); ++i) {
    const bool recent = static_cast<std::int64_t>(r.n_tokens) - 1 - kept[i].meta.pos < std::int64_t{min_age};
    Sink s{kept[i], {}, 0, 0, kept[i].meta.pos < initial_sinks};
    for (std::uint32_t l = 0; l < r.n_layers; ++l) {
      for (std::uint32_t h = 0; h < r.n_heads; ++h) {
        if (!dec.is_sink(i, l, h)) continue;
        s.heads.emplace_back(l, h);
        const double share = r.mean_share(l, h, kept[i].meta.pos);
        s.mean_share += share;
        s.max_share = std::max(s.max_share, share);
      }
    }
    if (s.heads.empty()) continue;
    if (recent) {
      ++scan.recent_left_out;
      continue;
    }
    s.mean_share /= static_cast<double>(s.heads.size());
    sinks.push_back(std::move(s));
  }
  std::sort(sinks.begin(), sinks.end(),
            [](const Sink& a, const Sink& b) { return a.token.meta.pos < b.token.meta.pos; });
  return scan;
}

// Gu et al.'s sink metric on token 0: per (layer, head), the mean attention token 0 receives over
// the queries after it that still see it (query 0 attends only to itself and is left out), and
// per layer how many heads exceed epsilon.
nlohmann::json token0_report(const Recording& r, double epsilon) {
  // seen[0] counts query 0 too; a key is visible to the same queries in every head.
  const std::uint32_t queries = r.seen[0] - 1;
  nlohmann::json layers = nlohmann::json::array();
  std::uint32_t above_total = 0;
  for (std::uint32_t l = 0; l < r.n_layers; ++l) {
    nlohmann::json mean = nlohmann::json::array();
    std::uint32_t above = 0;
    for (std::uint32_t h = 0; h < r.n_heads; ++h) {
      double sum = 0;
      for (std::uint32_t q = 1; q < r.n_tokens; ++q) {
        const float p = r.at(l, h, q, 0);
        if (!std::isnan(p)) sum += p;
      }
      const double m = queries ? sum / queries : 0.0;
      above += m > epsilon ? 1 : 0;
      mean.push_back(m);
    }
    above_total += above;
    layers.push_back({{"layer", l}, {"mean_attention", std::move(mean)}, {"heads_above", above}});
  }
  // What token 0 gets from a query that spreads its attention evenly over the keys it sees.
  double uniform = 0;
  for (std::uint32_t q = 1; q < r.n_tokens; ++q) uniform += 1.0 / (q + 1);
  uniform /= std::max(1u, r.n_tokens - 1);
  return {{"epsilon", epsilon},
          {"queries", queries},
          {"uniform_share", uniform},
          {"layers", std::move(layers)},
          {"heads_above", above_total},
          {"share_above", static_cast<double>(above_total) / (r.n_layers * r.n_heads)}};
}

std::string piece_of(const kvcache::llama::TextTokenizer& tok, std::int32_t token) {
  return std::string(tok.piece(token));
}

// "0:0123 2:57": heads by layer, for the table.
std::string heads_text(const Sink& s) {
  std::string out;
  std::int64_t layer = -1;
  for (const auto& [l, h] : s.heads) {
    if (l != layer) {
      out += fmt::format("{}{}:", out.empty() ? "" : " ", l);
      layer = l;
    } else {
      out += ',';
    }
    out += std::to_string(h);
  }
  return out;
}

void write_file(const std::filesystem::path& path, const void* data, std::size_t bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  f.close();
  if (!f) throw kvcache::Error(fmt::format("cannot write {}", path.string()));
}

void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  // Pieces are byte strings: replace invalid UTF-8 rather than fail the whole report.
  const std::string text = j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  write_file(path, text.data(), text.size());
}

}  // namespace

int run_inspect(const InspectOptions& o) {
  const LoadedModel m = load_model(o.common);
  const std::vector<std::int32_t> tokens = load_tokens(o.input, m, "inspect", 2);
  if (tokens.size() > kMaxInspectTokens) {
    throw kvcache::InvalidArgument(fmt::format(
        "inspect records every query x key attention: at most {} tokens, {} has {} (use --max-tokens)",
        kMaxInspectTokens, o.input.source(), tokens.size()));
  }
  const kvcache::llama::ModelConfig& config = m.weights->config;
  kvcache::llama::CacheOptions cache = cache_options(o.common, config);
  cache.force_detector = true;  // the detector's verdict at the end is the sink report
  kvcache::llama::Decoder dec(m.weights, cache);
  const std::filesystem::path out(o.out_dir);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) throw kvcache::Error(fmt::format("cannot create --out {}: {}", o.out_dir, ec.message()));

  const Recording r = record(dec, tokens);
  const SinkScan scan = find_sinks(dec, r, o.common.sinks, o.min_age);
  const std::vector<Sink>& sinks = scan.sinks;
  const std::uint32_t pairs = r.n_layers * r.n_heads;

  // Data for the plots: one raw float32 file per layer plus its description.
  nlohmann::json meta;
  meta["source"] = o.input.source();
  meta["source_kind"] = o.input.source_kind();
  meta["n_layers"] = r.n_layers;
  meta["n_heads"] = r.n_heads;
  meta["n_tokens"] = r.n_tokens;
  meta["dtype"] = "float32 little-endian";
  meta["layout"] =
      "[head][query][key] per layer file; query and key are stream positions; NaN = key not "
      "visible to the query (future, or evicted by the policy)";
  meta["cache"] = policy_json(o.common, config);
  meta["model"] = model_json(m);
  meta["files"] = nlohmann::json::array();
  const std::size_t layer_floats = std::size_t{r.n_heads} * r.n_tokens * r.n_tokens;
  for (std::uint32_t l = 0; l < r.n_layers; ++l) {
    const std::string name = fmt::format("attention_layer{}.f32", l);
    write_file(out / name, r.attention.data() + l * layer_floats, layer_floats * sizeof(float));
    meta["files"].push_back(name);
  }
  meta["tokens"] = nlohmann::json::array();
  for (std::int32_t t : tokens) meta["tokens"].push_back(piece_of(*m.tokenizer, t));
  write_json(out / "inspect.json", meta);

  // The sink report.
  nlohmann::json rep;
  rep["source"] = o.input.source();
  rep["n_tokens"] = r.n_tokens;
  rep["n_layers"] = r.n_layers;
  rep["n_heads"] = r.n_heads;
  rep["initial_sinks"] = o.common.sinks;
  rep["alpha"] = o.common.sink_alpha;
  rep["decay"] = o.common.sink_decay;
  rep["rule"] = fmt::format(
      "a token is a sink in (layer, head) when the detector's bias-corrected moving average of the attention "
      "it receives, in multiples of the uniform share 1/N, exceeds alpha = {} (decay {} per query), after "
      "the "
      "last token",
      o.common.sink_alpha, o.common.sink_decay);
  rep["min_age"] = o.min_age;
  rep["recent_left_out"] = scan.recent_left_out;
  rep["cache"] = policy_json(o.common, config);
  rep["model"] = model_json(m);
  // The first --sinks positions whatever the rule says: StreamingLLM pins them blindly, so how
  // much attention they really draw in this model is the first thing to know.
  rep["initial_tokens"] = nlohmann::json::array();
  for (std::uint32_t p = 0; p < std::min(o.common.sinks, r.n_tokens); ++p) {
    double mean = 0, mx = 0;
    for (std::uint32_t l = 0; l < r.n_layers; ++l) {
      for (std::uint32_t h = 0; h < r.n_heads; ++h) {
        mean += r.mean_share(l, h, p);
        mx = std::max(mx, r.mean_share(l, h, p));
      }
    }
    const auto it =
        std::find_if(sinks.begin(), sinks.end(), [&](const Sink& s) { return s.token.meta.pos == p; });
    rep["initial_tokens"].push_back({{"pos", p},
                                     {"token", tokens[p]},
                                     {"piece", piece_of(*m.tokenizer, tokens[p])},
                                     {"mean_share", mean / pairs},
                                     {"max_share", mx},
                                     {"sink_heads", it == sinks.end() ? 0 : it->heads.size()}});
  }
  rep["sinks"] = nlohmann::json::array();
  for (const Sink& s : sinks) {
    nlohmann::json heads = nlohmann::json::array();
    for (const auto& [l, h] : s.heads) heads.push_back({l, h});
    rep["sinks"].push_back({{"pos", s.token.meta.pos},
                            {"token", s.token.meta.token},
                            {"piece", piece_of(*m.tokenizer, s.token.meta.token)},
                            {"kind", s.initial ? "initial" : "hidden"},
                            {"n_heads", s.heads.size()},
                            {"heads", std::move(heads)},
                            {"mean_share", s.mean_share},
                            {"max_share", s.max_share},
                            {"pinned", pin_reason_name(s.token.meta.pin)}});
  }
  rep["per_head"] = nlohmann::json::array();
  for (std::uint32_t l = 0; l < r.n_layers; ++l) {
    for (std::uint32_t h = 0; h < r.n_heads; ++h) {
      nlohmann::json initial = nlohmann::json::array(), hidden = nlohmann::json::array();
      for (const Sink& s : sinks) {
        if (std::find(s.heads.begin(), s.heads.end(), std::pair{l, h}) == s.heads.end()) continue;
        (s.initial ? initial : hidden).push_back(s.token.meta.pos);
      }
      rep["per_head"].push_back({{"layer", l}, {"head", h}, {"initial", initial}, {"hidden", hidden}});
    }
  }
  rep["token0"] = token0_report(r, o.sink_epsilon);
  write_json(out / "sinks.json", rep);

  std::printf("inspect: %u tokens of %s, %u layers x %u heads\n", r.n_tokens, o.input.source().c_str(),
              r.n_layers, r.n_heads);
  std::printf("model %s\n", model_summary(m).c_str());
  std::printf("%s\n", policy_summary(o.common, config).c_str());
  std::printf(
      "sinks after the last token (rule holds: attention EMA > %g x uniform share, in >= 1 of %u heads); "
      "share = mean attention received / uniform share, over all queries, in its sink heads:\n",
      double{o.common.sink_alpha}, pairs);
  std::printf("  %5s  %-14s %-8s %6s %7s %7s  %s\n", "pos", "token", "kind", "heads", "share", "max",
              "layer:heads");
  for (const Sink& s : sinks) {
    const std::string piece = nlohmann::json(piece_of(*m.tokenizer, s.token.meta.token))
                                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("  %5lld  %-14s %-8s %3zu/%-2u %6.1fx %6.1fx  %s\n", static_cast<long long>(s.token.meta.pos),
                piece.c_str(), s.initial ? "initial" : "hidden", s.heads.size(), pairs, s.mean_share,
                s.max_share, heads_text(s).c_str());
  }
  if (sinks.empty()) std::printf("  (none)\n");
  std::printf("left out: %u of the %u newest tokens where the rule also holds (local attention; --min-age)\n",
              scan.recent_left_out, std::min(o.min_age, r.n_tokens));
  std::printf("initial tokens (share = mean over all %u heads / max):", pairs);
  for (const auto& t : rep["initial_tokens"]) {
    std::printf("  %lld %s %.1fx/%.1fx", static_cast<long long>(t["pos"].get<std::int64_t>()),
                t["piece"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str(),
                t["mean_share"].get<double>(), t["max_share"].get<double>());
  }
  std::printf("\n");
  const nlohmann::json& t0 = rep["token0"];
  std::printf(
      "token 0: mean attention per head over the %u queries after it (uniform share %.3f); Gu et al.'s "
      "sink metric: heads above %.2f, %u of %u (%.0f%%)\n",
      t0["queries"].get<unsigned>(), t0["uniform_share"].get<double>(), o.sink_epsilon,
      t0["heads_above"].get<unsigned>(), pairs, 100 * t0["share_above"].get<double>());
  for (const auto& layer : t0["layers"]) {
    std::printf("  layer %2u:", layer["layer"].get<unsigned>());
    for (const auto& v : layer["mean_attention"]) std::printf(" %.3f", v.get<double>());
    std::printf("   %u/%u above\n", layer["heads_above"].get<unsigned>(), r.n_heads);
  }
  std::printf("wrote %s, %s and %u attention_layer*.f32 files in %s\n", (out / "sinks.json").c_str(),
              (out / "inspect.json").c_str(), r.n_layers, out.c_str());
  std::fflush(stdout);
  if (!o.no_plot &&
      draw_plot(o.python, o.plot_script, "plot_inspect.py", {(out / "inspect.json").string()}, "heatmap")) {
    std::printf("wrote %s/attention_layer0..%u.png and sinks_overview.png\n", out.c_str(), r.n_layers - 1);
  }
  return 0;
}

}  // namespace kvstream
