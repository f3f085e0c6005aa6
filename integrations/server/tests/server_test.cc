// The server over loopback HTTP: output equal to a single uninterrupted stream (what kvstream
// generate prints), sessions continuing without re-prefill, stop strings, disconnects, bad input.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "server_fixture.h"

namespace kvserve::test {

using nlohmann::json;

TEST_CASE("server: a streamed completion equals the single-stream run with the same seed") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  // 90 tokens: past the budget of 64, so the stream evicts while it runs.
  const json req = {
      {"prompt", "Once upon a time"}, {"max_tokens", 90}, {"temperature", 0.9}, {"top_p", 0.9}, {"seed", 7}};
  Oracle oracle(test_cache(), 0.9f, 0.9f, 7);
  const std::string want = oracle.turn("Once upon a time", 90);

  const Streamed s = post_stream(c, req);
  CHECK(s.status == 200);
  CHECK(s.done);
  CHECK(s.events > 3);  // token by token, not one blob
  CHECK(s.text == want);
  CHECK(s.last["choices"][0]["finish_reason"] == "length");
  CHECK(s.last["usage"]["completion_tokens"] == 90);
  CHECK(!s.last.contains("session"));  // a one-off stream

  const Answer a = post(c, "/v1/completions", req);
  CHECK(a.status == 200);
  CHECK(a.body["choices"][0]["text"] == want);
  CHECK(a.body["object"] == "text_completion");
  // One-off streams leave nothing behind.
  CHECK(server.engine().accounting().pool_pages_in_use == 0);
}

TEST_CASE("server: two turns in one session equal one stream given both prompts") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  const Answer created = post(c, "/v1/sessions", json::object());
  REQUIRE(created.status == 201);
  const std::string id = created.body["id"];
  CHECK(created.body["tokens_kept"] == 0);

  Oracle oracle(test_cache(), 1.0f, 0.95f, 123);
  const std::string want1 = oracle.turn("Lily had a red ball.", 30);
  const std::string want2 = oracle.turn(" Then her mom said", 50);

  const Streamed t1 = post_stream(c, {{"prompt", "Lily had a red ball."},
                                      {"max_tokens", 30},
                                      {"top_p", 0.95},
                                      {"seed", 123},
                                      {"session", id}});
  CHECK(t1.text == want1);
  CHECK(t1.last["session"] == id);
  const Answer status1 = get(c, "/v1/sessions/" + id);
  const std::uint64_t seen1 = status1.body["tokens_seen"];
  // The session keeps its stream: the second turn's prompt is appended, nothing re-read.
  const Answer t2 =
      post(c, "/v1/completions",
           {{"prompt", " Then her mom said"}, {"max_tokens", 50}, {"top_p", 0.95}, {"session", id}});
  REQUIRE(t2.status == 200);
  CHECK(t2.body["choices"][0]["text"] == want2);
  const std::uint64_t prompt2 = t2.body["usage"]["prompt_tokens"];
  const Answer status2 = get(c, "/v1/sessions/" + id);
  // Tokens fed by turn 2: the last token of turn 1, the prompt, and all but the last generated.
  CHECK(status2.body["tokens_seen"].get<std::uint64_t>() == seen1 + 1 + prompt2 + 49);
  CHECK(status2.body["tokens_generated"] == 80);
  CHECK(status2.body["tokens_kept"] == 64);
  CHECK(status2.body["tokens_evicted"].get<std::uint64_t>() > 0);
  CHECK(status2.body["kv_bytes"].get<std::uint64_t>() > 0);
  CHECK(status2.body["state"] == "resident");

  const Answer del = [&] {
    httplib::Client d = server.client();
    const auto r = d.Delete(("/v1/sessions/" + id).c_str());
    REQUIRE(r);
    return Answer{r->status, json::parse(r->body), r->body};
  }();
  CHECK(del.status == 200);
  CHECK(get(c, "/v1/sessions/" + id).status == 404);
  CHECK(server.engine().accounting().pool_pages_in_use == 0);
}

TEST_CASE("server: a stop string ends the completion before it") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  Oracle oracle(test_cache(), 0.f, 1.f, 1);
  const std::string full = oracle.turn("Once upon a time", 60);
  const std::size_t at = full.find(' ', 20);
  REQUIRE(at != std::string::npos);
  const std::string stop = full.substr(at, 3);
  const std::string want = full.substr(0, full.find(stop));
  for (bool stream : {false, true}) {
    const json req = {
        {"prompt", "Once upon a time"}, {"max_tokens", 60}, {"temperature", 0}, {"stop", {stop, "zzz"}}};
    if (stream) {
      const Streamed s = post_stream(c, req);
      CHECK(s.text == want);
      CHECK(s.last["choices"][0]["finish_reason"] == "stop");
    } else {
      const Answer a = post(c, "/v1/completions", req);
      CHECK(a.body["choices"][0]["text"] == want);
      CHECK(a.body["choices"][0]["finish_reason"] == "stop");
    }
  }
}

TEST_CASE("server: a client that disconnects stops its stream; the session keeps what was generated") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  const std::string id = post(c, "/v1/sessions", json::object()).body["id"];
  {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body =
        json{{"prompt", "Tom"}, {"max_tokens", 500}, {"seed", 5}, {"session", id}, {"stream", true}}.dump();
    req.set_header("Content-Type", "application/json");
    int events = 0;
    req.content_receiver = [&](const char*, std::size_t, std::uint64_t, std::uint64_t) {
      return ++events < 3;
    };
    c.send(req);  // returns when the receiver gives up: the connection is closed
  }
  json status;
  for (int i = 0; i < 500; ++i) {  // the engine notices at its next write
    status = get(c, "/v1/sessions/" + id).body;
    if (!status["busy"].get<bool>()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(!status["busy"].get<bool>());
  const std::uint32_t generated = status["tokens_generated"];
  CHECK(generated > 0);
  CHECK(generated < 500);
  // The session continues from exactly what was generated.
  Oracle oracle(test_cache(), 1.f, 1.f, 5);
  oracle.turn("Tom", generated);
  const std::string want = oracle.turn(" and", 20);
  const Answer more = post(c, "/v1/completions", {{"prompt", " and"}, {"max_tokens", 20}, {"session", id}});
  CHECK(more.body["choices"][0]["text"] == want);
  const std::string metrics = get(c, "/metrics").raw;
  CHECK(metrics.find("kvstream_cancelled_total 1\n") != std::string::npos);
}

TEST_CASE("server: bad input gets a 4xx with a JSON error naming the field, and serving goes on") {
  TempDir dir;
  TestServer server(dir.path, 4, test_cache(), /*max_body=*/4096);
  auto c = server.client();
  auto check = [&](const Answer& a, int status, const json& param) {
    CHECK_MESSAGE(a.status == status, a.raw);
    REQUIRE_MESSAGE(a.body.is_object(), a.raw);
    CHECK_MESSAGE(a.body["error"]["param"] == param, a.raw);
    CHECK(!a.body["error"]["message"].get<std::string>().empty());
  };
  check(post_raw(c, "/v1/completions", "{\"prompt\": \"x\""), 400, "body");
  check(post(c, "/v1/completions", {{"prompt", 5}}), 400, "prompt");
  check(post(c, "/v1/completions", {{"max_tokens", -4}}), 400, "max_tokens");
  check(post(c, "/v1/completions", {{"max_tokens", 1000000}}), 400, "max_tokens");
  check(post(c, "/v1/completions", {{"temperature", "warm"}}), 400, "temperature");
  check(post(c, "/v1/completions", {{"session", "s-nope"}}), 404, "session");
  check(post(c, "/v1/completions", {{"session", "../../etc/passwd"}}), 404, "session");
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "The dog ran. ";
  check(post(c, "/v1/completions", {{"prompt", long_prompt}}), 400, "prompt");
  check(post_raw(c, "/v1/completions", json{{"prompt", std::string(5000, 'a')}}.dump()), 413, "body");
  check(get(c, "/v1/sessions/s-unknown"), 404, "session");
  check(get(c, "/v1/nothing"), 404, nullptr);
  // Still serving.
  const Answer ok = post(c, "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 3}});
  CHECK(ok.status == 200);
  CHECK(ok.body["usage"]["completion_tokens"] == 3);
  const Answer health = get(c, "/health");
  CHECK(health.status == 200);
  CHECK(health.body["status"] == "ok");
}

TEST_CASE("server: metrics are Prometheus text with the pool, sessions and token counters") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  post(c, "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 5}});
  const Answer m = get(c, "/metrics");
  CHECK(m.status == 200);
  for (const char* line : {"# TYPE kvstream_pool_pages_used gauge\n", "kvstream_pool_pages_max 1024\n",
                           "kvstream_tokens_generated_total 5\n", "kvstream_sessions_live 0\n",
                           "kvstream_refusals_total 0\n", "# TYPE kvstream_tokens_per_second gauge\n"}) {
    CHECK_MESSAGE(m.raw.find(line) != std::string::npos, line);
  }
}

}  // namespace kvserve::test
