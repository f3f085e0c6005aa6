// Completion bodies: defaults, accepted forms, and every kind of bad input answered with a 400
// naming the field.
#include "completion_request.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace kvserve::test {
namespace {

// The field an invalid body is blamed on (fails the test when the body is accepted).
std::string blamed(const std::string& body, RequestLimits limits = {}) {
  try {
    parse_completion_request(body, limits);
  } catch (const ApiError& e) {
    CHECK(e.status == 400);
    return e.param;
  }
  FAIL("accepted: " << body);
  return {};
}

}  // namespace

TEST_CASE("completion request: defaults follow OpenAI's") {
  const CompletionRequest r = parse_completion_request(R"({"prompt": "Once"})", {});
  CHECK(r.prompt == "Once");
  CHECK(r.max_tokens == 16);
  CHECK(r.temperature == 1.f);
  CHECK(r.top_p == 1.f);
  CHECK(!r.seed);
  CHECK(r.stop.empty());
  CHECK(!r.stream);
  CHECK(!r.session);
}

TEST_CASE("completion request: every field is read") {
  const CompletionRequest r = parse_completion_request(
      R"({"prompt": ["Hi"], "max_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 18446744073709551615,
          "stop": ["\n", "."], "stream": true, "session": "s-1", "model": "x", "n": 1, "echo": false,
          "user": "ignored"})",
      {});
  CHECK(r.prompt == "Hi");
  CHECK(r.max_tokens == 7);
  CHECK(r.temperature == 0.f);
  CHECK(r.top_p == 0.5f);
  CHECK(*r.seed == 18446744073709551615ull);
  CHECK(r.stop == std::vector<std::string>{"\n", "."});
  CHECK(r.stream);
  CHECK(*r.session == "s-1");
  CHECK(parse_completion_request(R"({"stop": "x"})", {}).stop == std::vector<std::string>{"x"});
}

TEST_CASE("completion request: bad input names the field") {
  CHECK(blamed("{\"prompt\": ") == "body");
  CHECK(blamed("[1, 2]") == "body");
  CHECK(blamed("") == "body");
  CHECK(blamed(R"({"prompt": 3})") == "prompt");
  CHECK(blamed(R"({"prompt": ["a", "b"]})") == "prompt");
  CHECK(blamed(R"({"max_tokens": -1})") == "max_tokens");
  CHECK(blamed(R"({"max_tokens": "5"})") == "max_tokens");
  CHECK(blamed(R"({"max_tokens": 2.5})") == "max_tokens");
  CHECK(blamed(R"({"max_tokens": 99999999999999999999})") == "max_tokens");
  CHECK(blamed(R"({"max_tokens": 101})", RequestLimits{100}) == "max_tokens");
  CHECK(parse_completion_request(R"({"max_tokens": 100})", RequestLimits{100}).max_tokens == 100);
  CHECK(blamed(R"({"temperature": -0.1})") == "temperature");
  CHECK(blamed(R"({"temperature": "hot"})") == "temperature");
  CHECK(blamed(R"({"top_p": 0})") == "top_p");
  CHECK(blamed(R"({"top_p": 1.5})") == "top_p");
  CHECK(blamed(R"({"seed": -3})") == "seed");
  CHECK(blamed(R"({"seed": 1.5})") == "seed");
  CHECK(blamed(R"({"stop": ""})") == "stop");
  CHECK(blamed(R"({"stop": [1]})") == "stop");
  CHECK(blamed(R"({"stop": ["a","b","c","d","e"]})") == "stop");
  CHECK(blamed(R"({"stream": "yes"})") == "stream");
  CHECK(blamed(R"({"session": 12})") == "session");
  CHECK(blamed(R"({"model": 12})") == "model");
  CHECK(blamed(R"({"n": 2})") == "n");
  CHECK(blamed(R"({"echo": true})") == "echo");
  CHECK(blamed(R"({"logprobs": 3})") == "logprobs");
}

TEST_CASE("completion request: error bodies have OpenAI's shape") {
  const auto j = nlohmann::json::parse(error_body(400, "max_tokens", "too many"));
  CHECK(j["error"]["param"] == "max_tokens");
  CHECK(j["error"]["message"] == "too many");
  CHECK(j["error"]["type"] == "invalid_request_error");
  CHECK(nlohmann::json::parse(error_body(503, "", "busy"))["error"]["param"].is_null());
}

}  // namespace kvserve::test
