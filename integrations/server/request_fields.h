// What every request body shares: the error answer (OpenAI's shape, naming the offending field),
// the server's limits, and the sampling and streaming fields both /v1/completions and
// /v1/chat/completions read, validated the same way for both.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kvserve {

/// An HTTP error answer: status, the request field it concerns ("" = none) and a message.
struct ApiError : std::runtime_error {
  ApiError(int status_, std::string param_, const std::string& message)
      : std::runtime_error(message), status(status_), param(std::move(param_)) {}
  int status;
  std::string param;
};

/// The JSON body of an error answer: {"error": {"message", "type", "param", "code"}}.
std::string error_body(int status, const std::string& param, const std::string& message);

/// Limits that validation enforces (server flags).
struct RequestLimits {
  std::uint32_t max_tokens = 4096;  ///< largest max_tokens accepted
};

/// How a request generates: the fields both endpoints share.
struct GenerationOptions {
  std::uint32_t max_tokens = 16;       ///< tokens to generate; 0 = only feed the prompt
  float temperature = 1.f;             ///< [0, 2]; 0 = greedy
  float top_p = 1.f;                   ///< (0, 1]; 1 = the full distribution
  std::optional<std::uint64_t> seed;   ///< reseeds the sampler; unset = random (new) or continue (session)
  std::vector<std::string> stop;       ///< up to 4 non-empty strings that end the completion
  bool stream = false;                 ///< server-sent events
  std::optional<std::string> session;  ///< run on this session
};

/// Throws ApiError 400 naming `field`.
[[noreturn]] void bad_field(const std::string& field, const std::string& message);

/// `text` as a JSON object. Throws ApiError 400 (param "body") for an empty body (the message
/// says the endpoint takes `expected`, e.g. "a JSON object with 'messages'"), malformed JSON and
/// a body that is not an object.
nlohmann::json parse_body_object(std::string_view text, std::string_view expected);

/// A token count field: an integer in [0, limits.max_tokens].
std::uint32_t parse_max_tokens(const nlohmann::json& value, const std::string& field,
                               const RequestLimits& limits);

/// Reads temperature, top_p, seed, stop, stream, session and model (type only) from `body` into
/// `o`; absent or null fields keep their defaults. Unknown fields are ignored, as OpenAI clients
/// send extras.
void parse_generation_fields(const nlohmann::json& body, GenerationOptions& o);

/// Refuses `field` when it is present, not null and not its default: an OpenAI option this
/// server does not implement is an error, never silently ignored.
void refuse_unsupported(const nlohmann::json& body, const char* field, bool is_default);

}  // namespace kvserve
