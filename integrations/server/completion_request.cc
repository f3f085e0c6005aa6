#include "completion_request.h"

#include <nlohmann/json.hpp>

namespace kvserve {

using nlohmann::json;

CompletionRequest parse_completion_request(std::string_view text, const RequestLimits& limits) {
  const json body = parse_body_object(text, "a JSON object with 'prompt' (a string)");
  CompletionRequest r;
  if (body.contains("prompt")) {
    const json& p = body["prompt"];
    if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = p[0].get<std::string>();  // what OpenAI clients send for a one-element batch
    } else if (p.is_string()) {
      r.prompt = p.get<std::string>();
    } else {
      bad_field("prompt",
                std::string("'prompt' must be a string (one prompt per request), not ") + p.type_name());
    }
  }
  if (body.contains("max_tokens") && !body["max_tokens"].is_null())
    r.max_tokens = parse_max_tokens(body["max_tokens"], "max_tokens", limits);
  parse_generation_fields(body, r);
  refuse_unsupported(body, "n", body.value("n", json(1)) == 1);
  refuse_unsupported(body, "best_of", body.value("best_of", json(1)) == 1);
  refuse_unsupported(body, "echo", body.value("echo", json(false)) == false);
  refuse_unsupported(body, "logprobs", false);
  refuse_unsupported(body, "suffix", false);
  return r;
}

}  // namespace kvserve
