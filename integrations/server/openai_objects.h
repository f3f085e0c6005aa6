// The JSON objects of OpenAI's answers: text_completion (whole, or one streamed event),
// chat.completion and chat.completion.chunk, and the usage they carry.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "job.h"

namespace kvserve {

/// Fixed for one answer: its id, creation time and model name.
struct AnswerIdentity {
  std::string id;        ///< "cmpl-..." or "chatcmpl-..."
  std::int64_t created;  ///< seconds since the epoch
  std::string model;
};

/// One text_completion object (a whole answer, or one event of a stream).
nlohmann::json completion_object(const AnswerIdentity& a, const std::string& text,
                                 const nlohmann::json& finish_reason);

/// A finished job's usage (chat jobs add prompt_tokens_details.cached_tokens). Call with job.mu held.
nlohmann::json usage_object(const Job& job);

/// Adds usage, "session" (when the job ran on one) and "error" (when it failed) to an answer.
/// Call with job.mu held.
void add_outcome(nlohmann::json& answer, const Job& job);

/// A whole chat.completion answer. Call with job.mu held.
nlohmann::json chat_completion(const AnswerIdentity& a, const std::string& content, const Job& job);

/// One chat.completion.chunk carrying `delta` (an object) and `finish_reason` (null until the last).
nlohmann::json chat_chunk(const AnswerIdentity& a, nlohmann::json delta, const nlohmann::json& finish_reason);

}  // namespace kvserve
