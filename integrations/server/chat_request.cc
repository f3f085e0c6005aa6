#include "chat_request.h"

#include <nlohmann/json.hpp>
#include <string>

namespace kvserve {
namespace {

using nlohmann::json;

std::string message_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    bad_field(where,
              "'" + where + "' must be a string or an array of text parts, not " + content.type_name());
  }
  std::string text;
  for (std::size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string at = where + "[" + std::to_string(j) + "]";
    if (!part.is_object()) bad_field(at, "'" + at + "' must be an object, not " + part.type_name());
    if (!part.contains("type") || !part["type"].is_string())
      bad_field(at + ".type", "'" + at + ".type' must be a string such as \"text\"");
    const std::string type = part["type"];
    if (type != "text") {
      bad_field(at + ".type", "content parts of type '" + type +
                                  "' are not supported: this server's models read text only");
    }
    if (!part.contains("text") || !part["text"].is_string())
      bad_field(at + ".text", "'" + at + ".text' must be a string");
    if (j > 0) text += '\n';
    text += part["text"].get<std::string>();
  }
  return text;
}

ChatMessage parse_message(const json& m, std::size_t i) {
  const std::string at = "messages[" + std::to_string(i) + "]";
  if (!m.is_object())
    bad_field(at, "'" + at + "' must be an object with 'role' and 'content', not " + m.type_name());
  if (!m.contains("role") || !m["role"].is_string())
    bad_field(at + ".role", "'" + at + ".role' must be a string: system, user or assistant");
  std::string role = m["role"];
  if (role == "developer") role = "system";
  if (role == "tool" || role == "function")
    bad_field(at + ".role", "'" + role + "' messages are not supported: this server has no tool calling");
  if (role != "system" && role != "user" && role != "assistant")
    bad_field(at + ".role",
              "'" + at + ".role' must be system, developer, user or assistant, not '" + role + "'");
  for (const char* field : {"tool_calls", "function_call"}) {
    if (m.contains(field) && !m[field].is_null() && !(m[field].is_array() && m[field].empty()))
      bad_field(at + "." + field,
                std::string("'") + field + "' is not supported: this server has no tool calling");
  }
  if (m.contains("name") && !m["name"].is_null() && !m["name"].is_string())
    bad_field(at + ".name", "'" + at + ".name' must be a string");
  if (!m.contains("content") || m["content"].is_null())
    bad_field(at + ".content", "'" + at + ".content' is required (a string or an array of text parts)");
  return {role, message_text(m["content"], at + ".content")};
}

}  // namespace

ChatRequest parse_chat_request(std::string_view text, const RequestLimits& limits) {
  const json body =
      parse_body_object(text, "a JSON object with 'messages' (an array of {\"role\", \"content\"} objects)");
  ChatRequest r;
  if (!body.contains("messages") || body["messages"].is_null())
    bad_field("messages", "'messages' is required: an array of {\"role\", \"content\"} objects");
  const json& messages = body["messages"];
  if (!messages.is_array())
    bad_field("messages", std::string("'messages' must be an array, not ") + messages.type_name());
  if (messages.empty()) bad_field("messages", "'messages' must hold at least one message");
  for (std::size_t i = 0; i < messages.size(); ++i) r.messages.push_back(parse_message(messages[i], i));

  r.max_tokens = limits.max_tokens;
  const bool has_max = body.contains("max_tokens") && !body["max_tokens"].is_null();
  const bool has_max_completion =
      body.contains("max_completion_tokens") && !body["max_completion_tokens"].is_null();
  if (has_max) r.max_tokens = parse_max_tokens(body["max_tokens"], "max_tokens", limits);
  if (has_max_completion) {
    const std::uint32_t n = parse_max_tokens(body["max_completion_tokens"], "max_completion_tokens", limits);
    if (has_max && n != r.max_tokens) {
      bad_field("max_tokens", "'max_tokens' (" + std::to_string(r.max_tokens) +
                                  ") and 'max_completion_tokens' (" + std::to_string(n) +
                                  ") disagree: give one");
    }
    r.max_tokens = n;
  }
  parse_generation_fields(body, r);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& o = body["stream_options"];
    if (!o.is_object())
      bad_field("stream_options", std::string("'stream_options' must be an object, not ") + o.type_name());
    if (!r.stream) bad_field("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (o.contains("include_usage") && !o["include_usage"].is_null()) {
      if (!o["include_usage"].is_boolean())
        bad_field("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
      r.include_usage = o["include_usage"].get<bool>();
    }
  }

  const auto is = [&](const char* field, const json& value) { return body.value(field, value) == value; };
  refuse_unsupported(body, "n", is("n", 1));
  refuse_unsupported(body, "logprobs", is("logprobs", false));
  refuse_unsupported(body, "top_logprobs", false);
  refuse_unsupported(body, "presence_penalty", body.value("presence_penalty", json(0)) == 0);
  refuse_unsupported(body, "frequency_penalty", body.value("frequency_penalty", json(0)) == 0);
  refuse_unsupported(body, "logit_bias", is("logit_bias", json::object()));
  refuse_unsupported(body, "tools", is("tools", json::array()));
  refuse_unsupported(body, "functions", is("functions", json::array()));
  refuse_unsupported(body, "tool_choice", is("tool_choice", "none") || is("tool_choice", "auto"));
  refuse_unsupported(body, "function_call", is("function_call", "none") || is("function_call", "auto"));
  refuse_unsupported(body, "response_format", is("response_format", json{{"type", "text"}}));
  refuse_unsupported(body, "modalities", is("modalities", json::array({"text"})));
  refuse_unsupported(body, "audio", false);
  refuse_unsupported(body, "prediction", false);
  return r;
}

}  // namespace kvserve
