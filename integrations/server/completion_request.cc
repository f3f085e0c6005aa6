#include "completion_request.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "directory_store.h"

namespace kvserve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& field, const std::string& message) {
  throw ApiError(400, field, message);
}

const char* type_name(const json& v) { return v.type_name(); }

double number(const json& body, const char* field, double lo, double hi) {
  const json& v = body.at(field);
  if (!v.is_number()) bad(field, std::string("'") + field + "' must be a number, not " + type_name(v));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad(field, std::string("'") + field + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() +
                   "], got " + v.dump());
  }
  return x;
}

}  // namespace

std::string error_body(int status, const std::string& param, const std::string& message) {
  const char* type = status == 503 || status == 429 ? "server_busy_error"
                     : status >= 500                ? "server_error"
                     : status == 404                ? "not_found_error"
                                                    : "invalid_request_error";
  json e = {{"message", message}, {"type", type}, {"code", status}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

CompletionRequest parse_completion_request(std::string_view text, const RequestLimits& limits) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::parse_error& e) {
    bad("body", std::string("malformed JSON: ") + e.what());
  }
  if (!body.is_object()) bad("body", std::string("the body must be a JSON object, not ") + type_name(body));

  CompletionRequest r;
  if (body.contains("prompt")) {
    const json& p = body["prompt"];
    if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = p[0].get<std::string>();  // what OpenAI clients send for a one-element batch
    } else if (p.is_string()) {
      r.prompt = p.get<std::string>();
    } else {
      bad("prompt", std::string("'prompt' must be a string (one prompt per request), not ") + type_name(p));
    }
  }
  if (body.contains("max_tokens") && !body["max_tokens"].is_null()) {
    const json& v = body["max_tokens"];
    if (!v.is_number_integer())
      bad("max_tokens", std::string("'max_tokens' must be an integer, not ") + type_name(v));
    const bool in_range = v.is_number_unsigned()
                              ? v.get<std::uint64_t>() <= limits.max_tokens
                              : v.get<std::int64_t>() >= 0 && v.get<std::int64_t>() <= limits.max_tokens;
    if (!in_range) {
      bad("max_tokens", "'max_tokens' must be in [0, " + std::to_string(limits.max_tokens) +
                            "] (--max-tokens-limit), got " + v.dump());
    }
    r.max_tokens = v.get<std::uint32_t>();
  }
  if (body.contains("temperature") && !body["temperature"].is_null())
    r.temperature = static_cast<float>(number(body, "temperature", 0.0, 2.0));
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    r.top_p = static_cast<float>(number(body, "top_p", 0.0, 1.0));
    if (r.top_p <= 0.f) bad("top_p", "'top_p' must be in (0, 1], got 0");
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    const json& v = body["seed"];
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0))
      bad("seed", "'seed' must be a non-negative integer, got " + v.dump());
    r.seed = v.get<std::uint64_t>();
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& v = body["stop"];
    if (v.is_string()) {
      r.stop.push_back(v.get<std::string>());
    } else if (v.is_array() && v.size() <= 4) {
      for (const json& s : v) {
        if (!s.is_string()) bad("stop", std::string("'stop' entries must be strings, not ") + type_name(s));
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of at most 4 strings");
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) bad("stop", "'stop' strings must not be empty");
    }
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean())
      bad("stream", std::string("'stream' must be a boolean, not ") + type_name(body["stream"]));
    r.stream = body["stream"].get<bool>();
  }
  if (body.contains("session") && !body["session"].is_null()) {
    const json& v = body["session"];
    if (!v.is_string())
      bad("session", std::string("'session' must be a session id string, not ") + type_name(v));
    r.session = v.get<std::string>();
  }
  if (body.contains("model") && !body["model"].is_null() && !body["model"].is_string())
    bad("model", std::string("'model' must be a string, not ") + type_name(body["model"]));
  // OpenAI options this server does not implement: refuse rather than silently ignore.
  auto unsupported = [&](const char* field, bool is_default) {
    if (body.contains(field) && !body[field].is_null() && !is_default)
      bad(field, std::string("'") + field + "' is not supported by this server (" + body[field].dump() + ")");
  };
  if (body.contains("n")) unsupported("n", body["n"] == 1);
  if (body.contains("best_of")) unsupported("best_of", body["best_of"] == 1);
  if (body.contains("echo")) unsupported("echo", body["echo"] == false);
  if (body.contains("logprobs")) unsupported("logprobs", false);
  if (body.contains("suffix")) unsupported("suffix", false);
  return r;
}

}  // namespace kvserve
