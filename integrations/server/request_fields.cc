#include "request_fields.h"

#include <cmath>

namespace kvserve {
namespace {

using nlohmann::json;

double number(const json& body, const char* field, double lo, double hi) {
  const json& v = body.at(field);
  if (!v.is_number()) bad_field(field, std::string("'") + field + "' must be a number, not " + v.type_name());
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad_field(field, std::string("'") + field + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() +
                         "], got " + v.dump());
  }
  return x;
}

bool given(const json& body, const char* field) { return body.contains(field) && !body[field].is_null(); }

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

void bad_field(const std::string& field, const std::string& message) { throw ApiError(400, field, message); }

json parse_body_object(std::string_view text, std::string_view expected) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    bad_field("body", "the request body is empty: this endpoint takes " + std::string(expected));
  json body;
  try {
    body = json::parse(text);
  } catch (const json::parse_error& e) {
    bad_field("body", std::string("malformed JSON: ") + e.what());
  }
  if (!body.is_object())
    bad_field("body", std::string("the body must be a JSON object, not ") + body.type_name());
  return body;
}

std::uint32_t parse_max_tokens(const json& v, const std::string& field, const RequestLimits& limits) {
  if (!v.is_number_integer()) bad_field(field, "'" + field + "' must be an integer, not " + v.type_name());
  const bool in_range = v.is_number_unsigned()
                            ? v.get<std::uint64_t>() <= limits.max_tokens
                            : v.get<std::int64_t>() >= 0 && v.get<std::int64_t>() <= limits.max_tokens;
  if (!in_range) {
    bad_field(field, "'" + field + "' must be in [0, " + std::to_string(limits.max_tokens) +
                         "] (--max-tokens-limit), got " + v.dump());
  }
  return v.get<std::uint32_t>();
}

void parse_generation_fields(const json& body, GenerationOptions& r) {
  if (given(body, "temperature")) r.temperature = static_cast<float>(number(body, "temperature", 0.0, 2.0));
  if (given(body, "top_p")) {
    r.top_p = static_cast<float>(number(body, "top_p", 0.0, 1.0));
    if (r.top_p <= 0.f) bad_field("top_p", "'top_p' must be in (0, 1], got 0");
  }
  if (given(body, "seed")) {
    const json& v = body["seed"];
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0))
      bad_field("seed", "'seed' must be a non-negative integer, got " + v.dump());
    r.seed = v.get<std::uint64_t>();
  }
  if (given(body, "stop")) {
    const json& v = body["stop"];
    if (v.is_string()) {
      r.stop.push_back(v.get<std::string>());
    } else if (v.is_array() && v.size() <= 4) {
      for (const json& s : v) {
        if (!s.is_string())
          bad_field("stop", std::string("'stop' entries must be strings, not ") + s.type_name());
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      bad_field("stop", "'stop' must be a string or an array of at most 4 strings");
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) bad_field("stop", "'stop' strings must not be empty");
    }
  }
  if (given(body, "stream")) {
    if (!body["stream"].is_boolean())
      bad_field("stream", std::string("'stream' must be a boolean, not ") + body["stream"].type_name());
    r.stream = body["stream"].get<bool>();
  }
  if (given(body, "session")) {
    const json& v = body["session"];
    if (!v.is_string())
      bad_field("session", std::string("'session' must be a session id string, not ") + v.type_name());
    r.session = v.get<std::string>();
  }
  if (given(body, "model") && !body["model"].is_string())
    bad_field("model", std::string("'model' must be a string, not ") + body["model"].type_name());
}

void refuse_unsupported(const json& body, const char* field, bool is_default) {
  if (given(body, field) && !is_default)
    bad_field(field,
              std::string("'") + field + "' is not supported by this server (" + body[field].dump() + ")");
}

}  // namespace kvserve
