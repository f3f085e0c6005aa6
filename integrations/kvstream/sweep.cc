#include "sweep.h"

#include <fmt/format.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "kvcache/error.h"
#include "llama/model.h"
#include "plot_script.h"
#include "scoring.h"
#include "text_output.h"
#include "token_nll_file.h"

namespace kvstream {

using Clock = std::chrono::steady_clock;

CLI::App* add_sweep_command(CLI::App& app, SweepOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "sweep",
      "Perplexity against KV memory: run `kvstream ppl` for every policy x budget (x KV dtype) of a grid "
      "(full runs once per dtype, without a budget) over the same tokens, several grid points at once, and "
      "write DIR/sweep.csv, DIR/sweep.json and DIR/sweep.png (PPL against the KV bytes each point used: "
      "peak pages plus q4's f16 key copies, so 512 q4 tokens and 128 f32 tokens compare at equal memory; "
      "one line per policy and dtype; needs python3 with matplotlib, else a warning). A table goes to "
      "stdout, progress to stderr when it is a "
      "terminal. Every point's ppl equals `kvstream ppl` with the same flags.");
  add_common_options(*cmd, o.common, /*policy_flags=*/false);
  add_token_input_options(*cmd, o.input,
                          "use at most N tokens of the file, the context token included; 0 = all");
  cmd->add_option("--policies", o.policies, "comma-separated policies to sweep (see --policy of ppl)")
      ->delimiter(',')
      ->check(CLI::IsMember({"full", "window", "sinks", "hidden-sinks", "h2o"}))
      ->capture_default_str();
  cmd->add_option(
         "--budgets", o.budgets,
         "comma-separated budgets in tokens kept per layer, pinned tokens included (every policy but "
         "full)")
      ->delimiter(',')
      ->check(CLI::Range(1u, 1u << 30))
      ->capture_default_str();
  cmd->add_option("--kv-dtypes", o.kv_dtypes,
                  "comma-separated KV dtypes to sweep (f32,f16,q8,q4), an axis beside policy and budget; "
                  "--pinned-dtype applies to all of them (default: --kv-dtype alone)")
      ->delimiter(',')
      ->check(CLI::IsMember({"f32", "f16", "q8", "q4"}));
  cmd->add_option("--out", o.out_dir, "output directory (created if missing; sweep.* files are overwritten)")
      ->required();
  cmd->add_option(
         "-j,--jobs", o.jobs,
         "grid points run at once, each on a thread of the --threads arena; 0 = --threads (every core "
         "when that is not given either; more jobs than --threads is an error). tokens_per_second is "
         "measured with this many points sharing the CPU")
      ->capture_default_str();
  cmd->add_option("--segment", o.segment, "scored tokens per segment in sweep.json's per-segment ppl")
      ->check(CLI::Range(1u, 1u << 30))
      ->capture_default_str();
  cmd->add_option("--plot-script", o.plot_script,
                  "matplotlib script drawing sweep.png from sweep.json (default: scripts/plot_sweep.py in "
                  "the source tree kvstream was built from)");
  cmd->add_option("--python", o.python,
                  "Python interpreter for the plot (default: python3 from PATH, then /usr/bin/python3, the "
                  "first with matplotlib)");
  cmd->add_flag("--no-plot", o.no_plot, "write sweep.csv and sweep.json only");
  cmd->add_flag("--per-token", o.per_token,
                "also write every point's per-token scores to DIR/nll/POLICY[-bBUDGET]-DTYPE.csv (as `ppl "
                "--nll-out`), so any two points can be set against each other with `kvstream compare`");
  return cmd;
}

namespace {

// One grid point: the flags of the equivalent `kvstream ppl` run, and its result.
struct Point {
  CommonOptions opts;
  std::unique_ptr<kvcache::llama::Decoder> decoder;
  StreamScore score;
  double cost = 0;  ///< relative work (attention reads), to start the longest points first
  std::string name() const {
    return (opts.policy == "full" ? opts.policy : fmt::format("{} budget {}", opts.policy, opts.budget)) +
           " " + opts.kv_dtype;
  }
  std::string nll_file() const {
    return (opts.policy == "full" ? opts.policy : fmt::format("{}-b{}", opts.policy, opts.budget)) + "-" +
           opts.kv_dtype + ".csv";
  }
};

std::vector<Point> make_grid(const SweepOptions& o, std::size_t n_tokens) {
  std::vector<std::string> policies;
  for (const std::string& p : o.policies) {
    if (std::find(policies.begin(), policies.end(), p) == policies.end()) policies.push_back(p);
  }
  std::vector<std::uint32_t> budgets = o.budgets;
  std::sort(budgets.begin(), budgets.end());
  budgets.erase(std::unique(budgets.begin(), budgets.end()), budgets.end());
  if (policies.empty()) throw kvcache::InvalidArgument("sweep: --policies is empty");
  const bool needs_budget =
      std::any_of(policies.begin(), policies.end(), [](auto& p) { return p != "full"; });
  if (needs_budget && budgets.empty()) throw kvcache::InvalidArgument("sweep: --budgets is empty");

  std::vector<std::string> dtypes;
  for (const std::string& d : o.kv_dtypes) {
    if (std::find(dtypes.begin(), dtypes.end(), d) == dtypes.end()) dtypes.push_back(d);
  }
  if (dtypes.empty()) dtypes.push_back(o.common.kv_dtype);

  const auto t = static_cast<double>(n_tokens);
  std::vector<Point> grid;
  for (const std::string& dtype : dtypes) {
    for (const std::string& p : policies) {
      for (std::size_t i = 0; i < (p == "full" ? 1 : budgets.size()); ++i) {
        Point pt;
        pt.opts = o.common;
        pt.opts.policy = p;
        pt.opts.kv_dtype = dtype;
        if (p != "full") pt.opts.budget = budgets[i];
        // Attention dominates for long contexts: keys read per query ~ min(kept, budget).
        pt.cost = p == "full" ? t * t / 2 : t * std::min(t, double(pt.opts.budget));
        grid.push_back(std::move(pt));
      }
    }
  }
  return grid;
}

// Progress over all points, drawn from whichever worker gets the lock (stderr on a terminal).
class SweepProgress {
 public:
  SweepProgress(std::size_t points, std::uint64_t tokens) : points_(points), tokens_(tokens) {}
  void add_tokens(std::uint64_t n) {
    tokens_done_.fetch_add(n, std::memory_order_relaxed);
    draw(false);
  }
  void point_done() {
    points_done_.fetch_add(1, std::memory_order_relaxed);
    draw(true);
  }
  void clear() { std::fprintf(stderr, "\r%s\r", std::string(79, ' ').c_str()); }

 private:
  void draw(bool force) {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    const auto now = Clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    const std::uint64_t done = tokens_done_.load(std::memory_order_relaxed);
    std::fprintf(stderr, "\rsweep: %zu/%zu points done, %llu/%llu tokens scored (%.0f%%), %.0f s ",
                 points_done_.load(std::memory_order_relaxed), points_, static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(tokens_),
                 tokens_ ? 100.0 * static_cast<double>(done) / static_cast<double>(tokens_) : 100.0,
                 std::chrono::duration<double>(now - start_).count());
    std::fflush(stderr);
  }

  std::size_t points_;
  std::uint64_t tokens_;
  std::atomic<std::size_t> points_done_{0};
  std::atomic<std::uint64_t> tokens_done_{0};
  std::mutex mutex_;
  Clock::time_point start_ = Clock::now(), last_ = start_;
};

// Runs every point, `jobs` at a time in an arena of `threads` (>= jobs) threads, longest first (so
// the full policy's quadratic run does not start last and leave the other threads idle at the end).
void run_grid(std::vector<Point>& grid, std::span<const std::int32_t> tokens, std::uint32_t segment,
              bool per_token, unsigned jobs, int threads, SweepProgress* progress) {
  std::vector<std::size_t> order(grid.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return grid[a].cost > grid[b].cost; });
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;

  auto run_point = [&](Point& pt) {
    std::uint64_t reported = 0;
    ScoreProgress report;
    if (progress != nullptr) {
      report = [&](std::uint64_t scored, double) {
        if (scored - reported >= 64) {
          progress->add_tokens(scored - reported);
          reported = scored;
        }
      };
    }
    pt.score = score_stream(*pt.decoder, tokens, segment, report, per_token);
    pt.decoder.reset();  // frees the point's page pool now, not at the end of the sweep
    if (progress != nullptr) {
      progress->add_tokens(pt.score.scored - reported);
      progress->point_done();
    }
  };

  const auto workers = static_cast<int>(std::min<std::size_t>(jobs, grid.size()));
  oneapi::tbb::task_arena arena(threads);
  arena.execute([&] {
    oneapi::tbb::parallel_for(0, workers, [&](int) {
      while (!failed.load()) {
        const std::size_t k = next.fetch_add(1);
        if (k >= order.size()) break;
        Point& pt = grid[order[k]];
        try {
          // Isolation: while this point waits inside a nested parallel loop (attention over a long
          // full-policy context), its thread must not pick up a whole other point, which would
          // stall this one and distort its tokens per second.
          oneapi::tbb::this_task_arena::isolate([&] { run_point(pt); });
        } catch (const kvcache::PoolExhausted& e) {
          std::lock_guard lock(error_mutex);
          if (!error) error = std::make_exception_ptr(kvcache::PoolExhausted(pt.name() + ": " + e.what()));
          failed = true;
        } catch (const std::exception& e) {
          std::lock_guard lock(error_mutex);
          if (!error) error = std::make_exception_ptr(kvcache::Error(pt.name() + ": " + e.what()));
          failed = true;
        }
      }
    });
  });
  if (error) std::rethrow_exception(error);
}

// The summary of one point: the flags that define it (as `ppl --json` reports them) and the
// result. CSV columns are taken from here, so both files agree by construction.
nlohmann::json point_json(const Point& pt, const kvcache::llama::ModelConfig& model) {
  nlohmann::json j = policy_json(pt.opts, model);
  const StreamScore& s = pt.score;
  // Peak pages over the run (what the policy needs to reserve) plus the f16 key copies q4 holds
  // outside the pool: the memory the point really used.
  j["kv_bytes"] = s.stats.kv_bytes_peak + s.stats.staging_bytes;
  j["kv_staging_bytes"] = s.stats.staging_bytes;
  j["ppl"] = s.ppl();
  j["nll_mean"] = s.nll_mean();
  j["tokens_scored"] = s.scored;
  j["complete"] = s.complete();
  j["tokens_kept"] = s.stats.tokens_kept;
  j["seconds"] = s.seconds;
  j["tokens_per_second"] = s.tokens_per_second();
  return j;
}

const std::vector<std::string> kCsvColumns{
    "policy",          "budget",        "sinks",       "window",
    "kv_bytes",        "ppl",           "nll_mean",    "tokens_per_second",
    "seconds",         "tokens_scored", "tokens_kept", "kv_dtype",
    "page_tokens",     "positions",     "complete",    "pinned_dtype",
    "kv_staging_bytes"};

std::string csv_field(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();  // policy and dtype names: no commas or quotes
  return v.dump();  // numbers: shortest text that reads back to the same double
}

void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << content;
  f.close();
  if (!f) throw kvcache::Error(fmt::format("cannot write {}", path.string()));
}

void print_table(const std::vector<Point>& grid, const kvcache::llama::ModelConfig& model) {
  std::printf("%-13s %5s %7s %6s %7s %11s %10s %9s\n", "policy", "dtype", "budget", "sinks", "window",
              "KV bytes", "ppl", "tok/s");
  for (const Point& pt : grid) {
    const bool full = pt.opts.policy == "full";
    const nlohmann::json pj = policy_json(pt.opts, model);
    std::printf("%-13s %5s %7s %6s %7s %11s %10.3f %9.0f%s\n", pt.opts.policy.c_str(),
                pt.opts.kv_dtype.c_str(), full ? "-" : std::to_string(pt.opts.budget).c_str(),
                csv_field(pj["sinks"]).c_str(), full ? "-" : csv_field(pj["window"]).c_str(),
                human_bytes(pt.score.stats.kv_bytes_peak + pt.score.stats.staging_bytes).c_str(),
                pt.score.ppl(), pt.score.tokens_per_second(), pt.score.complete() ? "" : "  (interrupted)");
  }
}

}  // namespace

int run_sweep(const SweepOptions& o) {
  const LoadedModel m = load_model(o.common);
  const std::vector<std::int32_t> tokens = load_tokens(o.input, m, "sweep", 2);
  const kvcache::llama::ModelConfig& config = m.weights->config;
  std::vector<Point> grid = make_grid(o, tokens.size());
  // Build every decoder before any work, so a bad point (e.g. --sinks >= a budget) fails at once
  // with its name instead of after minutes of the others.
  for (Point& pt : grid) {
    try {
      pt.decoder = std::make_unique<kvcache::llama::Decoder>(m.weights, cache_options(pt.opts, config));
    } catch (const kvcache::Error& e) {
      throw kvcache::InvalidArgument(fmt::format("sweep point {}: {}", pt.name(), e.what()));
    }
  }
  const std::filesystem::path out(o.out_dir);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) throw kvcache::Error(fmt::format("cannot create --out {}: {}", o.out_dir, ec.message()));
  if (o.per_token) {
    std::filesystem::create_directories(out / "nll", ec);
    if (ec) throw kvcache::Error(fmt::format("cannot create {}: {}", (out / "nll").string(), ec.message()));
  }

  // Each running point needs a thread of its own; spare threads help the points' products. Without
  // --threads the arena has every core, or --jobs threads when more jobs than cores are asked.
  const unsigned jobs = o.jobs > 0 ? o.jobs : static_cast<unsigned>(thread_count(o.common));
  if (o.common.threads && jobs > static_cast<unsigned>(*o.common.threads)) {
    throw kvcache::InvalidArgument(fmt::format(
        "--jobs {} exceeds --threads {}: each grid point running at once needs a thread of its own", jobs,
        *o.common.threads));
  }
  const int threads = std::max(thread_count(o.common), static_cast<int>(jobs));
  install_signal_handlers();
  std::unique_ptr<SweepProgress> progress;
  if (stderr_is_tty())
    progress = std::make_unique<SweepProgress>(grid.size(), grid.size() * (tokens.size() - 1));
  const auto start = Clock::now();
  run_grid(grid, tokens, o.segment, o.per_token, jobs, threads, progress.get());
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  if (progress) progress->clear();
  const bool complete =
      std::all_of(grid.begin(), grid.end(), [](const Point& p) { return p.score.complete(); });

  nlohmann::json j;
  j["source"] = o.input.source();
  j["source_kind"] = o.input.source_kind();
  j["model"] = o.common.model.empty() ? m.model_source : o.common.model;
  j["model_info"] = model_json(m);
  j["tokens_total"] = tokens.size();
  j["tokens_scored"] = tokens.size() - 1;
  j["jobs"] = jobs;
  j["threads"] = threads;
  j["wall_seconds"] = wall;
  j["segment_tokens"] = o.segment;
  j["complete"] = complete;
  j["points"] = nlohmann::json::array();
  std::string csv;
  for (std::size_t c = 0; c < kCsvColumns.size(); ++c) csv += (c ? "," : "") + kCsvColumns[c];
  csv += '\n';
  // Rows in grid order: policies as listed, budgets ascending.
  for (const Point& pt : grid) {
    nlohmann::json p = point_json(pt, config);
    for (std::size_t c = 0; c < kCsvColumns.size(); ++c) csv += (c ? "," : "") + csv_field(p[kCsvColumns[c]]);
    csv += '\n';
    nlohmann::json segs = nlohmann::json::array();
    for (const Segment& s : pt.score.segments) {
      segs.push_back({{"begin", s.begin}, {"end", s.end}, {"ppl", s.ppl()}});
    }
    p["segments"] = std::move(segs);
    if (o.per_token && pt.score.scored > 0) {
      write_token_nll_csv(out / "nll" / pt.nll_file(), tokens, pt.score.token_nll);
      p["nll_file"] = "nll/" + pt.nll_file();
    }
    j["points"].push_back(std::move(p));
  }
  write_file(out / "sweep.csv", csv);
  write_file(out / "sweep.json", j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");

  std::printf("sweep: %llu scored tokens of %s, %zu points, %u at a time, %.1f s\n",
              static_cast<unsigned long long>(tokens.size() - 1), o.input.source().c_str(), grid.size(), jobs,
              wall);
  std::string dtypes;
  for (const Point& pt : grid) {
    if (dtypes.find(pt.opts.kv_dtype) == std::string::npos)
      dtypes += (dtypes.empty() ? "" : ",") + pt.opts.kv_dtype;
  }
  std::printf(
      "cache: %s KV (pinned tokens: %s), %u-token pages, %s positions, %u initial sinks where the policy "
      "keeps them\n",
      dtypes.c_str(), o.common.pinned_dtype.empty() ? "same as KV" : o.common.pinned_dtype.c_str(),
      o.common.page_tokens, o.common.positions.c_str(), o.common.sinks);
  print_table(grid, config);
  std::printf("wrote %s, %s\n", (out / "sweep.csv").c_str(), (out / "sweep.json").c_str());
  std::fflush(stdout);
  if (!complete) return 130;  // an interrupted sweep keeps its partial files but draws nothing
  if (!o.no_plot && draw_plot(o.python, o.plot_script, "plot_sweep.py",
                              {(out / "sweep.json").string(), (out / "sweep.png").string()}, "sweep.png")) {
    std::printf("wrote %s\n", (out / "sweep.png").c_str());
  }
  return 0;
}

}  // namespace kvstream
