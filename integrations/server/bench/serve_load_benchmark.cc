// Load benchmark of the completion server over loopback: N clients each stream one completion of
// kTokens tokens on its own session at once. Reports tokens/s over the whole burst, and the
// per-token latency each client sees (time between consecutive streamed tokens) at p50 and p99,
// plus the time to the first token. Bounded: a few bursts per concurrency level.
#include <benchmark/benchmark.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "directory_store.h"
#include "engine.h"
#include "http_server.h"
#include "llama/checkpoint.h"
#include "llama/gguf_file.h"
#include "llama/gguf_tokenizer.h"
#include "llama/model_file.h"
#include "llama/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr int kTokens = 64;

struct Fixture {
  fs::path dir = fs::temp_directory_path() / ("kvserve_bench_" + std::to_string(std::random_device{}()));
  std::unique_ptr<kvserve::Engine> engine;
  std::unique_ptr<kvserve::HttpServer> http;
  std::thread thread;

  Fixture() {
    const fs::path models = fs::path(KVCACHE_SHARED_DIR) / "models";
    std::shared_ptr<const kvcache::llama::ModelWeights> model;
    std::shared_ptr<const kvcache::llama::TextTokenizer> tok;
    if (const char* path = std::getenv("KVCACHE_SERVE_MODEL"); path != nullptr && *path != 0) {
      // A GGUF model of a real size (bench/make_model writes random-weight ones): there batching
      // pays, since a step reads every weight once for all sessions instead of once per session.
      model = kvcache::llama::open_model_weights(path);
      tok = kvcache::llama::load_gguf_tokenizer(*kvcache::llama::GgufFile::open(path));
    } else {
      model =
          kvcache::llama::checkpoint_weights(kvcache::llama::Checkpoint::load(models / "stories260K.bin"));
      tok = std::make_shared<const kvcache::llama::Tokenizer>(
          kvcache::llama::Tokenizer::load(models / "tok512.bin", model->config.vocab_size));
    }
    kvserve::EngineOptions o;
    o.cache.policy = kvcache::PolicyConfig::streaming(4, 256);
    o.pool_bytes = std::size_t{256} << 20;  // every session fits: this measures decoding, not parking
    o.store = std::make_shared<kvserve::DirectoryStore>(dir);
    o.scratch_dir = dir;
    o.log = [](const std::string&) {};
    engine = std::make_unique<kvserve::Engine>(model, std::move(tok), std::move(o));
    kvserve::HttpOptions h;
    h.host = "127.0.0.1";
    h.port = 0;
    h.threads = 160;
    http = std::make_unique<kvserve::HttpServer>(*engine, h);
    thread = std::thread([this] { http->run(); });
  }
  ~Fixture() {
    http->stop();
    thread.join();
    http.reset();
    engine.reset();
    fs::remove_all(dir);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// Streams one completion; appends the gap before every token event (ms) and returns the time to
// the first one (ms).
double stream_one(int port, int seed, std::vector<double>& gaps) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  const auto created = c.Post("/v1/sessions", "{}", "application/json");
  const std::string id = nlohmann::json::parse(created->body)["id"];
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = nlohmann::json{
      {"prompt", "Once upon a time"},
      {"max_tokens", kTokens},
      {"seed", seed},
      {"session", id},
      {"stream",
       true}}.dump();
  req.set_header("Content-Type", "application/json");
  const auto start = Clock::now();
  auto last = start;
  double first = -1;
  std::string buffer;
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    buffer.append(data, n);
    for (std::size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const bool token_event = buffer.substr(0, end).find("\"finish_reason\":null") != std::string::npos;
      buffer.erase(0, end + 2);
      if (!token_event) continue;  // the final event and [DONE]
      const auto now = Clock::now();
      const double ms = std::chrono::duration<double, std::milli>(now - last).count();
      if (first < 0) {
        first = ms;
      } else {
        gaps.push_back(ms);
      }
      last = now;
    }
    return true;
  };
  c.send(req);
  c.Delete(("/v1/sessions/" + id).c_str());
  return first;
}

// A counter of the server's /metrics.
double metric(int port, const std::string& name) {
  httplib::Client c("127.0.0.1", port);
  const auto r = c.Get("/metrics");
  if (!r) return 0;
  const std::size_t at = r->body.find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::stod(r->body.substr(at + name.size() + 2));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

void BM_ConcurrentStreams(benchmark::State& state) {
  Fixture& f = fixture();
  const int n = static_cast<int>(state.range(0));
  std::vector<double> gaps, firsts;
  double tokens = 0, seconds = 0;
  const double steps0 = metric(f.http->port(), "kvstream_decode_steps_total");
  const double rows0 = metric(f.http->port(), "kvstream_decode_rows_total");
  for (auto _ : state) {
    std::vector<std::vector<double>> per(static_cast<std::size_t>(n));
    std::vector<double> first(static_cast<std::size_t>(n));
    const auto start = Clock::now();
    std::vector<std::thread> clients;
    for (int i = 0; i < n; ++i) {
      clients.emplace_back([&, i] {
        first[static_cast<std::size_t>(i)] =
            stream_one(f.http->port(), i + 1, per[static_cast<std::size_t>(i)]);
      });
    }
    for (auto& t : clients) t.join();
    seconds += std::chrono::duration<double>(Clock::now() - start).count();
    tokens += static_cast<double>(n) * kTokens;
    for (const auto& p : per) gaps.insert(gaps.end(), p.begin(), p.end());
    firsts.insert(firsts.end(), first.begin(), first.end());
  }
  const double steps = metric(f.http->port(), "kvstream_decode_steps_total") - steps0;
  state.counters["sessions"] = n;
  state.counters["rows_per_step"] =
      steps > 0 ? (metric(f.http->port(), "kvstream_decode_rows_total") - rows0) / steps : 0;
  state.counters["tok_per_s"] = tokens / seconds;
  state.counters["p50_ms"] = percentile(gaps, 0.50);
  state.counters["p99_ms"] = percentile(gaps, 0.99);
  state.counters["ttft_p50_ms"] = percentile(firsts, 0.50);
}
BENCHMARK(BM_ConcurrentStreams)
    ->Arg(1)
    ->Arg(4)
    ->Arg(16)
    ->Arg(64)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
