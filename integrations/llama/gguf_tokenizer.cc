#include "llama/gguf_tokenizer.h"

#include "llama/gguf_vocab.h"

namespace kvcache::llama {
namespace {

std::vector<std::string> copy_strings(const std::optional<std::vector<std::string_view>>& views) {
  std::vector<std::string> out;
  if (!views) return out;
  out.reserve(views->size());
  for (std::string_view v : *views) out.emplace_back(v);
  return out;
}

}  // namespace

std::unique_ptr<TextTokenizer> load_gguf_tokenizer(const GgufFile& file) {
  GgufVocab v;
  v.file = file.path().string();
  v.model = file.require_string("tokenizer.ggml.model");
  if (const auto pre = file.get_string("tokenizer.ggml.pre")) v.pre = std::string(*pre);
  v.tokens = copy_strings(file.get_string_array("tokenizer.ggml.tokens"));
  v.scores = file.get_f32_array("tokenizer.ggml.scores").value_or(std::vector<float>{});
  v.token_types = file.get_i32_array("tokenizer.ggml.token_type").value_or(std::vector<std::int32_t>{});
  v.merges = copy_strings(file.get_string_array("tokenizer.ggml.merges"));
  v.bos_id = file.get_uint("tokenizer.ggml.bos_token_id");
  v.eos_id = file.get_uint("tokenizer.ggml.eos_token_id");
  v.add_bos = file.get_bool("tokenizer.ggml.add_bos_token");
  v.add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix");
  return make_gguf_tokenizer(std::move(v));
}

}  // namespace kvcache::llama
