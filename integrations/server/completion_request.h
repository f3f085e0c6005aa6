// POST /v1/completions bodies: parsing and validation into a CompletionRequest, or an ApiError
// naming the offending field (OpenAI's error shape: message, type, param).
#pragma once

#include <cstdint>
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

struct CompletionRequest {
  std::string prompt;                  ///< text appended to the stream ("" allowed)
  std::uint32_t max_tokens = 16;       ///< tokens to generate (OpenAI's default); 0 = only feed the prompt
  float temperature = 1.f;             ///< [0, 2]; 0 = greedy
  float top_p = 1.f;                   ///< (0, 1]; 1 = the full distribution
  std::optional<std::uint64_t> seed;   ///< reseeds the sampler; unset = random (new) or continue (session)
  std::vector<std::string> stop;       ///< up to 4 non-empty strings that end the completion
  bool stream = false;                 ///< server-sent events
  std::optional<std::string> session;  ///< continue this session; unset = a one-off stream
};

/// Parses `body`. Throws ApiError 400 for malformed JSON, a body that is not an object, a field of
/// the wrong type or out of range, or an OpenAI option this server does not implement (n > 1,
/// best_of > 1, echo, logprobs, suffix); unknown fields are ignored, as OpenAI clients send extras.
CompletionRequest parse_completion_request(std::string_view body, const RequestLimits& limits);

}  // namespace kvserve
