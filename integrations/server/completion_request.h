// POST /v1/completions bodies: parsing and validation into a CompletionRequest, or an ApiError
// naming the offending field (OpenAI's error shape: message, type, param).
#pragma once

#include <string>
#include <string_view>

#include "request_fields.h"

namespace kvserve {

struct CompletionRequest : GenerationOptions {
  std::string prompt;  ///< text appended to the stream ("" allowed)
};

/// Parses `body`. Throws ApiError 400 for an empty or malformed body, a body that is not an
/// object, a field of the wrong type or out of range, or an OpenAI option this server does not
/// implement (n > 1, best_of > 1, echo, logprobs, suffix); unknown fields are ignored, as OpenAI
/// clients send extras. max_tokens defaults to 16 (OpenAI's default for completions).
CompletionRequest parse_completion_request(std::string_view body, const RequestLimits& limits);

}  // namespace kvserve
