// /v1/chat/completions over loopback HTTP: answers equal the model run on the rendered
// conversation, stateless clients continue their session (only the new tokens fed, the same
// answer as without it), through sliding windows, parking and restarts; edited conversations and
// named sessions never continue a wrong history.
#include <doctest/doctest.h>

#include <chrono>

#include "chat_template.h"
#include "llama/model.h"
#include "llama/sampler.h"
#include "server_fixture.h"

namespace kvserve::test {

using nlohmann::json;

namespace {

struct Expected {
  std::string content;
  std::string finish_reason;
  std::size_t prompt_tokens = 0;
};

// The answer a chat request must get: the model fed the chatml rendering of `messages` (BOS
// first), sampling from `seed` until max_tokens or an end token (BOS, EOS), on one cache.
Expected run_chat(const json& messages, std::uint32_t max_tokens, float temperature, std::uint64_t seed,
                  const kvcache::llama::CacheOptions& cache) {
  std::vector<ChatMessage> chat;
  for (const json& m : messages) chat.push_back({m["role"], m["content"]});
  const auto& tok = *test_tokenizer();
  const std::vector<std::int32_t> input =
      tok.encode(ChatTemplate::named("chatml").render(chat), true, false, true);
  kvcache::llama::Decoder d(test_model(), cache);
  kvcache::llama::Sampler sampler({temperature, 1.f, seed});
  Expected e{"", "length", input.size()};
  std::span<const float> logits = d.prefill(input);
  std::int32_t prev = input.back();
  for (std::uint32_t i = 0; i < max_tokens; ++i) {
    const std::int32_t next = sampler.sample(logits);
    if (next == tok.bos() || next == tok.eos()) {
      e.finish_reason = "stop";
      break;
    }
    e.content += tok.decode(prev, next);
    prev = next;
    if (i + 1 < max_tokens) logits = d.step(next);
  }
  return e;
}

json chat_body(const json& messages, std::uint32_t max_tokens, float temperature, std::uint64_t seed) {
  return {{"model", "stories260K"},
          {"messages", messages},
          {"max_tokens", max_tokens},
          {"temperature", temperature},
          {"seed", seed}};
}

const json kTurn1 = json::array({{{"role", "system"}, {"content", "You tell stories."}},
                                 {{"role", "user"}, {"content", "Once upon a time"}}});

// kTurn1, the first answer, and a second user message.
json turn2(const std::string& answer, const std::string& user = "What did the cat do?") {
  json m = kTurn1;
  m.push_back({{"role", "assistant"}, {"content", answer}});
  m.push_back({{"role", "user"}, {"content", user}});
  return m;
}

std::uint64_t cached(const json& answer) { return answer["usage"]["prompt_tokens_details"]["cached_tokens"]; }
std::uint64_t prompt(const json& answer) { return answer["usage"]["prompt_tokens"]; }
std::uint64_t completion(const json& answer) { return answer["usage"]["completion_tokens"]; }
std::string content(const json& answer) { return answer["choices"][0]["message"]["content"]; }

}  // namespace

TEST_CASE("chat: the answer is the model's on the rendered conversation, whole or streamed") {
  TempDir dir;
  const auto cache = test_cache(256);
  TestServer server(dir.path, 4, cache);
  auto c = server.client();
  const Expected want = run_chat(kTurn1, 30, 0.8f, 11, cache);

  const Answer a = post(c, "/v1/chat/completions", chat_body(kTurn1, 30, 0.8f, 11));
  REQUIRE(a.status == 200);
  CHECK(a.body["object"] == "chat.completion");
  CHECK(a.body["model"] == "stories260K");
  CHECK(a.body["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  CHECK(a.body["choices"][0]["message"]["role"] == "assistant");
  CHECK(content(a.body) == want.content);
  CHECK(a.body["choices"][0]["finish_reason"] == want.finish_reason);
  CHECK(prompt(a.body) == want.prompt_tokens);
  CHECK(cached(a.body) == 0);
  CHECK(a.body["usage"]["total_tokens"] == prompt(a.body) + completion(a.body));

  // Streamed, with usage: the role first, one delta per token, finish_reason, then the usage chunk.
  json body = chat_body(kTurn1, 30, 0.8f, 11);
  body["stream_options"] = {{"include_usage", true}};
  const ChatStreamed s = post_chat_stream(c, body);
  CHECK(s.status == 200);
  CHECK(s.done);
  REQUIRE(s.events.size() >= 4);
  CHECK(s.events.front()["object"] == "chat.completion.chunk");
  CHECK(s.events.front()["choices"][0]["delta"] == json{{"role", "assistant"}, {"content", ""}});
  CHECK(s.content == want.content);
  const json& finish = s.events[s.events.size() - 2];
  CHECK(finish["choices"][0]["finish_reason"] == want.finish_reason);
  CHECK(finish["choices"][0]["delta"] == json::object());
  const json& usage = s.events.back();
  CHECK(usage["choices"].empty());
  CHECK(usage["usage"]["prompt_tokens"] == want.prompt_tokens);
  CHECK(usage["usage"]["completion_tokens"] == completion(a.body));
  for (std::size_t i = 0; i + 1 < s.events.size(); ++i) {
    CHECK(s.events[i]["usage"].is_null());
    CHECK(s.events[i]["id"] == s.events.front()["id"]);
  }
  // Without include_usage no chunk has a usage key.
  const ChatStreamed plain = post_chat_stream(c, chat_body(kTurn1, 30, 0.8f, 11));
  CHECK(plain.content == want.content);
  for (const json& e : plain.events) CHECK(!e.contains("usage"));
}

TEST_CASE("chat: a stateless client's next turn continues its session, with the answer it would get anyway") {
  const auto cache = test_cache(256);
  TempDir dir, cold_dir;
  TestServer server(dir.path, 4, cache);
  auto c = server.client();
  const Answer t1 = post(c, "/v1/chat/completions", chat_body(kTurn1, 20, 0.f, 1));
  REQUIRE(t1.status == 200);
  // A turn cut at max_tokens leaves its last token pending: the next conversation starts with it.
  REQUIRE(t1.body["choices"][0]["finish_reason"] == "length");
  const std::string id = t1.body["session"];

  const json next = chat_body(turn2(content(t1.body)), 25, 0.9f, 5);
  const Answer t2 = post(c, "/v1/chat/completions", next);
  REQUIRE(t2.status == 200);
  CHECK(t2.body["session"] == id);
  // Everything turn 1 put in the stream was reused but its last token, which had not been fed.
  CHECK(cached(t2.body) == prompt(t1.body) + completion(t1.body) - 1);
  CHECK(prompt(t2.body) > prompt(t1.body) + completion(t1.body));

  const std::string metrics = c.Get("/metrics")->body;
  CHECK(metrics.find("\nkvstream_chat_session_reuses_total 1\n") != std::string::npos);
  CHECK(metrics.find("\nkvstream_chat_cached_tokens_total " + std::to_string(cached(t2.body)) + "\n") !=
        std::string::npos);
  const Answer status = get(c, "/v1/sessions/" + id);
  CHECK(status.body["origin"] == "chat");
  CHECK(status.body["requests"] == 2);
  CHECK(status.body["history_tokens"] == prompt(t2.body) + completion(t2.body));

  // The same conversation on a server that never saw it: the same answer, nothing cached.
  TestServer cold(cold_dir.path, 4, cache);
  auto cc = cold.client();
  const Answer fresh = post(cc, "/v1/chat/completions", next);
  CHECK(cached(fresh.body) == 0);
  CHECK(content(fresh.body) == content(t2.body));
  CHECK(content(fresh.body) == run_chat(next["messages"], 25, 0.9f, 5, cache).content);
  // Sent again here, it finds no session holding exactly its history (the session went on).
  const Answer again = post(c, "/v1/chat/completions", next);
  CHECK(cached(again.body) == 0);
  CHECK(again.body["session"] != id);
  CHECK(content(again.body) == content(t2.body));
}

TEST_CASE("chat: an edited or branched conversation starts a new session and leaves the old one alone") {
  const auto cache = test_cache(256);
  TempDir dir;
  TestServer server(dir.path, 4, cache);
  auto c = server.client();
  const Answer t1 = post(c, "/v1/chat/completions", chat_body(kTurn1, 20, 0.f, 1));
  const std::string id = t1.body["session"];
  const std::uint64_t held = get(c, "/v1/sessions/" + id).body["history_tokens"];

  // The first answer edited by the client, then the first user message edited. (Text appended to
  // the answer would not be an edit: the history is still a prefix, and the session goes on.)
  const Answer edited =
      post(c, "/v1/chat/completions", chat_body(turn2("Oh, " + content(t1.body)), 10, 0.f, 1));
  CHECK(cached(edited.body) == 0);
  CHECK(edited.body["session"] != id);
  json other = turn2(content(t1.body));
  other[1]["content"] = "Once upon a time there";
  const Answer rewritten = post(c, "/v1/chat/completions", chat_body(other, 10, 0.f, 1));
  CHECK(cached(rewritten.body) == 0);
  CHECK(get(c, "/v1/sessions/" + id).body["history_tokens"] == held);  // untouched

  // Two branches from the same turn: the first continues the session, the second cannot.
  const Answer a =
      post(c, "/v1/chat/completions", chat_body(turn2(content(t1.body), "Who came?"), 10, 0.f, 1));
  const Answer b = post(c, "/v1/chat/completions", chat_body(turn2(content(t1.body), "Where?"), 10, 0.f, 1));
  CHECK(a.body["session"] == id);
  CHECK(cached(a.body) == held - 1);
  CHECK(b.body["session"] != id);
  CHECK(cached(b.body) == 0);
  CHECK(content(b.body) == run_chat(turn2(content(t1.body), "Where?"), 10, 0.f, 1, cache).content);
}

TEST_CASE("chat: with a sliding window the conversation is matched against its history, not the cache") {
  const auto cache = test_cache(64);  // 4 sinks + 60 window: turn 1 alone overflows it
  TempDir dir, cold_dir;
  TestServer server(dir.path, 4, cache);
  auto c = server.client();
  const Answer t1 = post(c, "/v1/chat/completions", chat_body(kTurn1, 40, 0.f, 1));
  REQUIRE(t1.body["choices"][0]["finish_reason"] == "length");
  const std::string id = t1.body["session"];
  CHECK(get(c, "/v1/sessions/" + id).body["tokens_evicted"].get<std::uint64_t>() > 0);

  const json next = chat_body(turn2(content(t1.body)), 30, 0.7f, 9);
  const Answer t2 = post(c, "/v1/chat/completions", next);
  CHECK(t2.body["session"] == id);
  CHECK(cached(t2.body) == prompt(t1.body) + completion(t1.body) - 1);
  CHECK(cached(t2.body) > 64);
  TestServer cold(cold_dir.path, 4, cache);
  auto cc = cold.client();
  const Answer fresh = post(cc, "/v1/chat/completions", next);
  CHECK(cached(fresh.body) == 0);
  CHECK(content(fresh.body) == content(t2.body));  // the streaming cache evicts the same tokens either way
}

TEST_CASE("chat: sessions parked under memory pressure and across a restart are found again") {
  const auto cache = test_cache(64);
  TempDir dir;
  const json other = json::array({{{"role", "user"}, {"content", "Tom had a big dog."}}});
  std::string id;
  json next;
  std::uint64_t reused = 0;
  {
    // A pool that holds one session at its budget: the second conversation parks the first.
    TestServer server(dir.path, 0.2, cache);
    auto c = server.client();
    const Answer t1 = post(c, "/v1/chat/completions", chat_body(kTurn1, 30, 0.f, 1));
    id = t1.body["session"];
    reused = prompt(t1.body) + completion(t1.body) - 1;
    post(c, "/v1/chat/completions", chat_body(other, 30, 0.f, 1));
    CHECK(get(c, "/v1/sessions/" + id).body["state"] == "parked");
    next = chat_body(turn2(content(t1.body)), 20, 0.f, 1);
    const Answer t2 = post(c, "/v1/chat/completions", next);
    CHECK(t2.body["session"] == id);
    CHECK(cached(t2.body) == reused);
    CHECK(server.engine().accounting().restores > 0);
    // Turn 3's conversation, answered after a restart below.
    next = chat_body(
        [&] {
          json m = next["messages"];
          m.push_back({{"role", "assistant"}, {"content", content(t2.body)}});
          m.push_back({{"role", "user"}, {"content", "The end?"}});
          return m;
        }(),
        20, 0.f, 1);
    reused = prompt(t2.body) + completion(t2.body) - 1;
    server.stop();
  }
  TestServer restarted(dir.path, 0.2, cache);
  auto c = restarted.client();
  CHECK(get(c, "/v1/sessions/" + id).body["state"] == "parked");
  const Answer t3 = post(c, "/v1/chat/completions", next);
  REQUIRE(t3.status == 200);
  CHECK(t3.body["session"] == id);
  CHECK(cached(t3.body) == reused);
  CHECK(content(t3.body) == run_chat(next["messages"], 20, 0.f, 1, cache).content);
}

TEST_CASE("chat: a named session takes only conversations that continue its history") {
  const auto cache = test_cache(256);
  TempDir dir;
  TestServer server(dir.path, 4, cache);
  auto c = server.client();
  const std::string id = post(c, "/v1/sessions", json::object()).body["id"];
  json body = chat_body(kTurn1, 20, 0.f, 1);
  body["session"] = id;
  const Answer t1 = post(c, "/v1/chat/completions", body);
  REQUIRE(t1.status == 200);
  CHECK(t1.body["session"] == id);
  CHECK(cached(t1.body) == 0);
  json next = chat_body(turn2(content(t1.body)), 10, 0.f, 1);
  next["session"] = id;
  const Answer t2 = post(c, "/v1/chat/completions", next);
  CHECK(cached(t2.body) == prompt(t1.body) + completion(t1.body) - 1);
  const std::uint64_t held = get(c, "/v1/sessions/" + id).body["history_tokens"];

  json wrong = chat_body(turn2("Something else entirely."), 10, 0.f, 1);
  wrong["session"] = id;
  const Answer refused = post(c, "/v1/chat/completions", wrong);
  CHECK(refused.status == 400);
  CHECK(refused.body["error"]["param"] == "messages");
  CHECK(refused.raw.find("differs from the conversation at token") != std::string::npos);
  CHECK(get(c, "/v1/sessions/" + id).body["history_tokens"] == held);  // nothing changed

  // A stateless request never continues a named session, even with its exact conversation.
  const Answer stateless = post(c, "/v1/chat/completions", chat_body(turn2(content(t1.body)), 5, 0.f, 1));
  CHECK(stateless.body["session"] != id);

  // /v1/completions on it appends text the chat endpoint cannot check: chat refuses it after.
  CHECK(post(c, "/v1/completions", {{"prompt", " more"}, {"max_tokens", 2}, {"session", id}}).status == 200);
  CHECK(get(c, "/v1/sessions/" + id).body["history_tokens"].is_null());
  const Answer after = post(c, "/v1/chat/completions", next);
  CHECK(after.status == 409);
  CHECK(after.body["error"]["param"] == "session");
}

TEST_CASE("chat: --max-sessions replaces the least recently used chat session, never an api one") {
  TempDir dir;
  TestServer server(dir.path, 4, test_cache(256), 1 << 16, nullptr, 2);
  auto c = server.client();
  const std::string api = post(c, "/v1/sessions", json::object()).body["id"];
  const Answer a = post(c, "/v1/chat/completions", chat_body(kTurn1, 5, 0.f, 1));
  const Answer b = post(c, "/v1/chat/completions",
                        chat_body(json::array({{{"role", "user"}, {"content", "Hi"}}}), 5, 0.f, 1));
  REQUIRE(b.status == 200);
  const json list = get(c, "/v1/sessions").body["data"];
  REQUIRE(list.size() == 2);
  std::vector<std::string> ids;
  for (const json& s : list) ids.push_back(s["id"]);
  CHECK(std::find(ids.begin(), ids.end(), api) != ids.end());
  CHECK(std::find(ids.begin(), ids.end(), b.body["session"].get<std::string>()) != ids.end());
  CHECK(get(c, "/v1/sessions/" + a.body["session"].get<std::string>()).status == 404);
  // With only api sessions left there is nothing to replace: 429.
  CHECK(post(c, "/v1/sessions", json::object()).status == 201);  // replaces chat session b
  const Answer full = post(c, "/v1/chat/completions", chat_body(kTurn1, 5, 0.f, 1));
  CHECK(full.status == 429);
  CHECK(full.body["error"]["param"] == "session");
}

TEST_CASE("chat: bad and bodyless requests are answered at once, naming what is missing") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  const Answer empty = post_raw(c, "/v1/chat/completions", "");
  CHECK(empty.status == 400);
  CHECK(empty.body["error"]["param"] == "body");
  CHECK(empty.raw.find("'messages'") != std::string::npos);
  const Answer no_messages = post(c, "/v1/chat/completions", json::object());
  CHECK(no_messages.status == 400);
  CHECK(no_messages.body["error"]["param"] == "messages");
  const Answer bad_role =
      post(c, "/v1/chat/completions", {{"messages", {{{"role", "robot"}, {"content", "x"}}}}});
  CHECK(bad_role.body["error"]["param"] == "messages[0].role");
  CHECK(server.engine().list_sessions()["data"].empty());  // refused requests made no session

  // curl -X POST with no data sends no Content-Length: answered at once, not after a timeout.
  const auto t0 = std::chrono::steady_clock::now();
  const std::string created =
      raw_http(server.port(), "POST /v1/sessions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  const std::string chat = raw_http(
      server.port(), "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  CHECK(created.rfind("HTTP/1.1 201", 0) == 0);
  CHECK(chat.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(chat.find("the request body is empty") != std::string::npos);
  CHECK(chat.find("'messages'") != std::string::npos);
  const Answer with_fields = post(c, "/v1/sessions", {{"name", "x"}});
  CHECK(with_fields.status == 400);
  CHECK(with_fields.body["error"]["param"] == "name");
}

TEST_CASE("chat: /v1/models lists the model with its details") {
  TempDir dir;
  TestServer server(dir.path, 4);
  auto c = server.client();
  const Answer list = get(c, "/v1/models");
  REQUIRE(list.status == 200);
  CHECK(list.body["object"] == "list");
  const json& m = list.body["data"][0];
  CHECK(m["id"] == "stories260K");
  CHECK(m["object"] == "model");
  CHECK(m["owned_by"] == "kvstream");
  CHECK(m["created"].get<std::int64_t>() > 0);
  CHECK(m["meta"]["chat_template"] == "chatml");
  CHECK(get(c, "/v1/models/stories260K").body == m);
  const Answer unknown = get(c, "/v1/models/gpt-4");
  CHECK(unknown.status == 404);
  CHECK(unknown.body["error"]["param"] == "model");
}

}  // namespace kvserve::test
