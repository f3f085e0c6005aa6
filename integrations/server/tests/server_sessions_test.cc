// Sessions under memory pressure and across restarts: 64 concurrent sessions in a pool a fraction
// of their size (parked and restored, outputs unchanged, pages accounted exactly), shutdown and
// restart, torn and corrupt records.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "kvcache/error.h"
#include "server_fixture.h"

namespace kvserve::test {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// POST, retrying while the server answers 503 (out of KV memory), as its Retry-After asks.
Answer post_retrying(httplib::Client& c, const json& body, std::atomic<int>& refusals) {
  for (;;) {
    Answer a = post(c, "/v1/completions", body);
    if (a.status < 0) std::fprintf(stderr, "%s\n", a.raw.c_str());
    if (a.status != 503) return a;
    ++refusals;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The completion's text; an answer that is not a whole completion (an error, a request that
// ended with finish_reason "error") is printed and counted.
std::string text_or_failure(const Answer& a, std::atomic<int>& failures) {
  if (a.status != 200 || a.body["choices"][0]["finish_reason"] == "error") {
    std::fprintf(stderr, "%s\n", a.raw.c_str());
    ++failures;
    return {};
  }
  return a.body["choices"][0]["text"];
}

std::string prompt_of(int i) { return i % 2 ? "The cat sat" : "Once there was a boy"; }

// n_sessions clients at once, each two turns in its own session, against a server whose pool
// (pool_mib) holds a fraction of what they need: parking and restoring happen, and every session's
// text must equal its single-session run (batched decode changes no arithmetic), with the pool's
// pages accounted exactly at the end.
void check_concurrent_sessions(int n_sessions, const kvcache::llama::CacheOptions& cache, double pool_mib) {
  constexpr std::uint32_t kTokens = 12;
  const auto kSessions = static_cast<std::size_t>(n_sessions);
  // The single-session runs, first: two turns each.
  std::vector<std::string> want1(kSessions), want2(kSessions);
  for (int i = 0; i < n_sessions; ++i) {
    Oracle o(cache, 1.f, 0.9f, 1000 + static_cast<std::uint64_t>(i));
    want1[static_cast<std::size_t>(i)] = o.turn(prompt_of(i), kTokens);
    want2[static_cast<std::size_t>(i)] = o.turn(" and then", kTokens);
  }

  TempDir dir;
  TestServer server(dir.path, pool_mib, cache);
  std::atomic<int> refusals{0}, failures{0};
  std::vector<std::string> ids(kSessions), got1(kSessions), got2(kSessions);
  std::vector<std::thread> clients;
  for (int i = 0; i < n_sessions; ++i) {
    clients.emplace_back([&, i] {
      auto c = server.client();
      const auto k = static_cast<std::size_t>(i);
      const Answer created = post(c, "/v1/sessions", json::object());
      if (created.status != 201) {
        std::fprintf(stderr, "%s\n", created.raw.c_str());
        ++failures;
        return;
      }
      ids[k] = created.body["id"];
      const json base = {{"max_tokens", kTokens}, {"top_p", 0.9}, {"session", ids[k]}};
      json t1 = base;
      t1["prompt"] = prompt_of(i);
      t1["seed"] = 1000 + i;
      got1[k] = text_or_failure(post_retrying(c, t1, refusals), failures);
      json t2 = base;
      t2["prompt"] = " and then";
      got2[k] = text_or_failure(post_retrying(c, t2, refusals), failures);
    });
  }
  for (auto& t : clients) t.join();
  REQUIRE(failures == 0);
  for (std::size_t k = 0; k < kSessions; ++k) {
    CHECK_MESSAGE(got1[k] == want1[k], "session " << k << " turn 1");
    CHECK_MESSAGE(got2[k] == want2[k], "session " << k << " turn 2");
  }
  const EngineAccounting a = server.engine().accounting();
  // Continuous batching ran: decode steps fed more than one session on average.
  auto c = server.client();
  const std::string metrics = c.Get("/metrics")->body;
  const auto counter = [&](const std::string& name) {
    const std::size_t at = metrics.find("\n" + name + " ");
    REQUIRE(at != std::string::npos);
    return std::stod(metrics.substr(at + name.size() + 2));
  };
  const double steps = counter("kvstream_decode_steps_total"), rows = counter("kvstream_decode_rows_total");
  MESSAGE("decode steps " << steps << ", rows " << rows);
  CHECK(rows > 1.5 * steps);
  MESSAGE("parks " << a.parks << ", restores " << a.restores << ", 503 answers " << refusals.load());
  CHECK(a.parks > 0);
  CHECK(a.restores > 0);
  CHECK(a.sessions_resident + a.sessions_parked == kSessions);
  CHECK(a.sessions_parked > 0);
  // Exact accounting: the pool's pages are exactly the resident sessions' pages.
  CHECK(a.pool_pages_in_use == a.resident_pages);
  CHECK(a.committed_pages == a.resident_pages);
  CHECK(a.pool_pages_in_use <= a.pool_pages_max);
  CHECK(a.requests_active == 0);
  CHECK(a.reservation_overruns == 0);

  for (const std::string& id : ids) CHECK(c.Delete(("/v1/sessions/" + id).c_str())->status == 200);
  const EngineAccounting after = server.engine().accounting();
  CHECK(after.pool_pages_in_use == 0);
  CHECK(after.committed_pages == 0);
  CHECK(after.sessions_parked + after.sessions_resident == 0);
  CHECK(fs::is_empty(dir.path));  // parked records are removed with their sessions
}

}  // namespace

TEST_CASE("server: 64 concurrent sessions in a pool a fraction of their size equal their single runs") {
  // 0.75 MiB = 192 pages of 4 KiB; each idle session holds 10-15 pages, a running one reserves
  // up to 20: about a sixth of the sessions fit at once.
  check_concurrent_sessions(64, test_cache(), 0.75);
}

TEST_CASE(
    "server: q4 sessions with f32 pinned tokens (a pinned page holds fewer tokens) stay within their "
    "reservation") {
  // H2O pins up to 12 heavy hitters of a 16-token budget, in f32 pages that hold about a fifth as
  // many tokens as a q4 window page: the reservation must count pinned pages at their own size.
  kvcache::llama::CacheOptions cache = test_cache();
  cache.policy = kvcache::PolicyConfig::heavy_hitters(12, 16);
  cache.dtype = kvcache::DType::q4;
  cache.pinned_dtype = kvcache::DType::f32;
  check_concurrent_sessions(24, cache, 0.15);
}

TEST_CASE("server: after a shutdown, a restarted server resumes every session exactly") {
  TempDir dir;
  constexpr int kSessions = 5;
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<Oracle>> oracles;
  {
    TestServer first(dir.path, 4);
    auto c = first.client();
    for (int i = 0; i < kSessions; ++i) {
      oracles.push_back(
          std::make_unique<Oracle>(test_cache(), 0.8f, 1.f, 50 + static_cast<std::uint64_t>(i)));
      const std::string want = oracles.back()->turn(prompt_of(i), 20 + 15 * i);  // some past the budget
      ids.push_back(post(c, "/v1/sessions", json::object()).body["id"]);
      const Answer a = post(c, "/v1/completions",
                            {{"prompt", prompt_of(i)},
                             {"max_tokens", 20 + 15 * i},
                             {"temperature", 0.8},
                             {"seed", 50 + i},
                             {"session", ids.back()}});
      CHECK(a.body["choices"][0]["text"] == want);
    }
    first.stop();  // what SIGTERM does
    bool logged = false;
    for (const auto& line : first.log())
      logged = logged || line.find("5 sessions parked") != std::string::npos;
    CHECK(logged);
  }
  TestServer second(dir.path, 4);
  auto c = second.client();
  CHECK(second.engine().accounting().sessions_parked == kSessions);
  for (int i = 0; i < kSessions; ++i) {
    const auto k = static_cast<std::size_t>(i);
    CHECK(get(c, "/v1/sessions/" + ids[k]).body["state"] == "parked");
    const std::string want = oracles[k]->turn(" Then", 25);
    const Answer a =
        post(c, "/v1/completions",
             {{"prompt", " Then"}, {"max_tokens", 25}, {"temperature", 0.8}, {"session", ids[k]}});
    CHECK_MESSAGE(a.body["choices"][0]["text"] == want, "session " << i);
  }
  CHECK(second.engine().accounting().restores == kSessions);
}

TEST_CASE(
    "server: torn and corrupt records are reported and never loaded; a torn write keeps the previous "
    "record") {
  TempDir dir;
  std::vector<std::string> ids;
  Oracle oracle(test_cache(), 1.f, 1.f, 9);
  oracle.turn("A bird", 10);
  {
    TestServer first(dir.path, 4);
    auto c = first.client();
    for (int i = 0; i < 3; ++i) {
      ids.push_back(post(c, "/v1/sessions", json::object()).body["id"]);
      post(c, "/v1/completions",
           {{"prompt", "A bird"}, {"max_tokens", 10}, {"seed", 9}, {"session", ids.back()}});
    }
    first.stop();
  }
  auto file = [&](const std::string& id) { return dir.path / (id + ".session"); };
  // ids[0]: killed while writing a newer record: a torn temporary beside the intact previous one.
  std::ofstream(file(ids[0]).string() + ".tmp", std::ios::binary) << "KVSESSN";
  // ids[1]: truncated; ids[2]: one byte flipped in the middle.
  fs::resize_file(file(ids[1]), fs::file_size(file(ids[1])) / 2);
  {
    std::fstream f(file(ids[2]), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(file(ids[2])) / 2));
    f.put('\x7f');
  }
  TestServer second(dir.path, 4);
  auto c = second.client();
  std::string log;
  for (const auto& line : second.log()) log += line + "\n";
  CHECK(log.find("torn session write") != std::string::npos);
  CHECK(log.find(ids[1] + " is corrupt") != std::string::npos);
  CHECK(log.find(ids[2] + " is corrupt") != std::string::npos);

  const json torn = get(c, "/v1/sessions/" + ids[0]).body;
  CHECK(torn["state"] == "parked");
  CHECK(torn["recovery"].get<std::string>().find("interrupted write") != std::string::npos);
  const Answer resumed =
      post(c, "/v1/completions", {{"prompt", " flew"}, {"max_tokens", 10}, {"session", ids[0]}});
  CHECK(resumed.body["choices"][0]["text"] == oracle.turn(" flew", 10));

  for (int k : {1, 2}) {
    const json status = get(c, "/v1/sessions/" + ids[static_cast<std::size_t>(k)]).body;
    CHECK(status["state"] == "corrupt");
    CHECK(status["error"].get<std::string>().find("checksum mismatch") != std::string::npos);
    const Answer refused =
        post(c, "/v1/completions",
             {{"prompt", "x"}, {"max_tokens", 2}, {"session", ids[static_cast<std::size_t>(k)]}});
    CHECK(refused.status == 409);
    CHECK(refused.body["error"]["param"] == "session");
  }
  CHECK(second.engine().accounting().restores == 1);  // only the intact one was ever loaded
  CHECK(fs::exists(file(ids[1])));                    // kept for inspection until deleted
  CHECK(c.Delete(("/v1/sessions/" + ids[1]).c_str())->status == 200);
  CHECK(!fs::exists(file(ids[1])));
}

namespace {
// A store that cannot take anything (a full disk): no session can be parked.
class FullStore final : public SessionStore {
 public:
  void put(const std::string&, std::span<const std::byte>) override { throw kvcache::Error("disk full"); }
  std::optional<std::vector<std::byte>> get(const std::string&) const override { return std::nullopt; }
  void remove(const std::string&) override {}
  std::vector<std::string> list() const override { return {}; }
  std::vector<TornWrite> recover() override { return {}; }
  std::string describe() const override { return "full store"; }
};
}  // namespace

TEST_CASE(
    "server: when nothing can be parked, a request gets 503 with Retry-After and no session is harmed") {
  TempDir dir;
  // 35 pages: a request of up to 64 tokens reserves all of them, an idle full session holds 25.
  TestServer server(dir.path, 35.0 * 4096 / (1 << 20), test_cache(), 1 << 16, std::make_shared<FullStore>());
  auto c = server.client();
  const std::string id = post(c, "/v1/sessions", json::object()).body["id"];
  Oracle oracle(test_cache(), 1.f, 1.f, 2);
  CHECK(post(c, "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 60}, {"seed", 2}, {"session", id}})
            .body["choices"][0]["text"] == oracle.turn("Hi", 60));
  CHECK(server.engine().accounting().pool_pages_in_use == 25);

  const auto r =
      c.Post("/v1/completions", json{{"prompt", "Yo"}, {"max_tokens", 60}}.dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->get_header_value("Retry-After") == "1");
  CHECK(json::parse(r->body)["error"]["message"].get<std::string>().find("out of KV memory") !=
        std::string::npos);
  bool logged = false;
  for (const auto& line : server.log()) logged = logged || line.find("disk full") != std::string::npos;
  CHECK(logged);
  // The idle session was not touched and continues exactly.
  const Answer more = post(c, "/v1/completions", {{"prompt", " ok"}, {"max_tokens", 5}, {"session", id}});
  CHECK(more.body["choices"][0]["text"] == oracle.turn(" ok", 5));
  CHECK(get(c, "/metrics").raw.find("kvstream_refusals_total 1\n") != std::string::npos);
}

}  // namespace kvserve::test
