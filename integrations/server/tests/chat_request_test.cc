// Chat completion bodies: OpenAI's accepted forms and defaults, and every kind of bad input
// answered with a 400 naming the field.
#include "chat_request.h"

#include <doctest/doctest.h>

#include <string>

namespace kvserve::test {
namespace {

std::string blamed(const std::string& body, RequestLimits limits = {}) {
  try {
    parse_chat_request(body, limits);
  } catch (const ApiError& e) {
    CHECK(e.status == 400);
    return e.param;
  }
  FAIL("accepted: " << body);
  return {};
}

std::string message_of(const std::string& body) {
  try {
    parse_chat_request(body, {});
  } catch (const ApiError& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("chat request: messages, content parts and defaults") {
  const ChatRequest r = parse_chat_request(
      R"({"model": "m", "messages": [{"role": "developer", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
          {"role": "assistant", "content": "Hi", "name": "bot", "tool_calls": []}]})",
      RequestLimits{300});
  REQUIRE(r.messages.size() == 3);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[0].content == "Be brief.");
  CHECK(r.messages[1].content == "Hello\nthere");
  CHECK(r.messages[2].role == "assistant");
  CHECK(r.max_tokens == 300);  // until the model ends its turn, bounded by --max-tokens-limit
  CHECK(r.temperature == 1.f);
  CHECK(!r.stream);
  CHECK(!r.include_usage);
  CHECK(!r.session);
}

TEST_CASE("chat request: every generation field is read") {
  const ChatRequest r = parse_chat_request(
      R"({"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 7, "max_tokens": 7,
          "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": "\n", "stream": true,
          "stream_options": {"include_usage": true}, "session": "s-1", "n": 1, "presence_penalty": 0,
          "frequency_penalty": 0, "logprobs": false, "tools": [], "tool_choice": "none",
          "response_format": {"type": "text"}, "user": "ignored"})",
      {});
  CHECK(r.max_tokens == 7);
  CHECK(r.temperature == 0.5f);
  CHECK(r.top_p == 0.9f);
  CHECK(*r.seed == 3);
  CHECK(r.stop == std::vector<std::string>{"\n"});
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(*r.session == "s-1");
  CHECK(parse_chat_request(R"({"messages": [{"role": "user", "content": ""}], "max_tokens": 0})", {})
            .max_tokens == 0);
}

TEST_CASE("chat request: bad input names the field") {
  CHECK(blamed("") == "body");
  CHECK(message_of("").find("'messages'") != std::string::npos);
  CHECK(blamed("[]") == "body");
  CHECK(blamed("{") == "body");
  CHECK(blamed("{}") == "messages");
  CHECK(message_of("{}").find("'messages' is required") != std::string::npos);
  CHECK(blamed(R"({"messages": []})") == "messages");
  CHECK(blamed(R"({"messages": "hi"})") == "messages");
  CHECK(blamed(R"({"messages": ["hi"]})") == "messages[0]");
  CHECK(blamed(R"({"messages": [{"content": "hi"}]})") == "messages[0].role");
  CHECK(blamed(R"({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]})") ==
        "messages[1].role");
  CHECK(blamed(R"({"messages": [{"role": "tool", "content": "b"}]})") == "messages[0].role");
  CHECK(blamed(R"({"messages": [{"role": "user"}]})") == "messages[0].content");
  CHECK(blamed(R"({"messages": [{"role": "assistant", "content": null}]})") == "messages[0].content");
  CHECK(blamed(R"({"messages": [{"role": "user", "content": 3}]})") == "messages[0].content");
  CHECK(blamed(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})") ==
        "messages[0].content[0].type");
  CHECK(blamed(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})") ==
        "messages[0].content[0].text");
  CHECK(blamed(R"({"messages": [{"role": "user", "content": ["x"]}]})") == "messages[0].content[0]");
  CHECK(blamed(R"({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]})") ==
        "messages[0].tool_calls");
  CHECK(blamed(R"({"messages": [{"role": "user", "content": "x", "name": 1}]})") == "messages[0].name");
  const std::string ok = R"("messages": [{"role": "user", "content": "x"}])";
  CHECK(blamed("{" + ok + R"(, "max_tokens": -1})") == "max_tokens");
  CHECK(blamed("{" + ok + R"(, "max_completion_tokens": 5000})") == "max_completion_tokens");
  CHECK(blamed("{" + ok + R"(, "max_tokens": 5, "max_completion_tokens": 6})") == "max_tokens");
  CHECK(blamed("{" + ok + R"(, "temperature": 3})") == "temperature");
  CHECK(blamed("{" + ok + R"(, "top_p": 0})") == "top_p");
  CHECK(blamed("{" + ok + R"(, "seed": -1})") == "seed");
  CHECK(blamed("{" + ok + R"(, "stop": [""]})") == "stop");
  CHECK(blamed("{" + ok + R"(, "stream": "yes"})") == "stream");
  CHECK(blamed("{" + ok + R"(, "stream_options": {"include_usage": true}})") == "stream_options");
  CHECK(blamed("{" + ok + R"(, "stream": true, "stream_options": {"include_usage": 1}})") ==
        "stream_options.include_usage");
  CHECK(blamed("{" + ok + R"(, "session": 5})") == "session");
  CHECK(blamed("{" + ok + R"(, "model": 5})") == "model");
  for (const char* unsupported :
       {R"("n": 2)", R"("logprobs": true)", R"("top_logprobs": 2)", R"("presence_penalty": 0.5)",
        R"("frequency_penalty": 1)", R"("logit_bias": {"5": 1})", R"("tools": [{"type": "function"}])",
        R"("tool_choice": "required")", R"("response_format": {"type": "json_object"})", R"("audio": {})"}) {
    const std::string body = "{" + ok + ", " + unsupported + "}";
    const std::string field = std::string(unsupported).substr(1, std::string(unsupported).find('"', 1) - 1);
    CHECK_MESSAGE(blamed(body) == field, body);
  }
}

}  // namespace kvserve::test
