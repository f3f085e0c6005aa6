#include "openai_objects.h"

namespace kvserve {

using nlohmann::json;

json completion_object(const AnswerIdentity& a, const std::string& text, const json& finish_reason) {
  return {{"id", a.id},
          {"object", "text_completion"},
          {"created", a.created},
          {"model", a.model},
          {"choices",
           json::array(
               {{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}})}};
}

json usage_object(const Job& job) {
  json u = {{"prompt_tokens", job.prompt_count},
            {"completion_tokens", job.completion_count},
            {"total_tokens", job.prompt_count + job.completion_count}};
  if (job.kind == Job::Kind::chat) u["prompt_tokens_details"] = {{"cached_tokens", job.cached_count}};
  return u;
}

void add_outcome(json& j, const Job& job) {
  j["usage"] = usage_object(job);
  if (!job.session_id.empty()) j["session"] = job.session_id;
  if (!job.error.empty()) j["error"] = {{"message", job.error}, {"type", "server_error"}};
}

json chat_completion(const AnswerIdentity& a, const std::string& content, const Job& job) {
  json j = {{"id", a.id},
            {"object", "chat.completion"},
            {"created", a.created},
            {"model", a.model},
            {"choices", json::array({{{"index", 0},
                                      {"message", {{"role", "assistant"}, {"content", content}}},
                                      {"logprobs", nullptr},
                                      {"finish_reason", job.finish_reason}}})}};
  add_outcome(j, job);
  return j;
}

json chat_chunk(const AnswerIdentity& a, json delta, const json& finish_reason) {
  return {{"id", a.id},
          {"object", "chat.completion.chunk"},
          {"created", a.created},
          {"model", a.model},
          {"choices", json::array({{{"index", 0},
                                    {"delta", std::move(delta)},
                                    {"logprobs", nullptr},
                                    {"finish_reason", finish_reason}}})}};
}

}  // namespace kvserve
