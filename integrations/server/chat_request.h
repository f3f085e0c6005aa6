// POST /v1/chat/completions bodies (OpenAI's request shape): parsing and validation into a
// ChatRequest, or an ApiError naming the offending field ("messages[2].content[0].type").
#pragma once

#include <string_view>
#include <vector>

#include "chat_template.h"
#include "request_fields.h"

namespace kvserve {

struct ChatRequest : GenerationOptions {
  std::vector<ChatMessage> messages;  ///< at least one; roles system, user, assistant
  bool include_usage = false;         ///< stream_options.include_usage: a last chunk with usage
};

/// Parses `body`. Messages: `role` one of system, developer (read as system, as OpenAI maps it
/// for older models), user, assistant; `content` a string or an array of text parts
/// ({"type": "text", "text": ...}, joined with "\n", as vLLM does). max_completion_tokens (or
/// the older max_tokens; both given must agree) defaults to limits.max_tokens: a chat answer runs
/// until the model ends its turn, as OpenAI's does. Throws ApiError 400 for an empty or malformed
/// body, missing or empty messages, a wrong type or value anywhere, and every OpenAI option this
/// server does not implement: tools and tool calls, non-text content parts, n > 1, logprobs,
/// penalties, logit_bias, response formats other than text, stream_options without stream.
ChatRequest parse_chat_request(std::string_view body, const RequestLimits& limits);

}  // namespace kvserve
