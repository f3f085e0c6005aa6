#include "token_input.h"

#include <fmt/format.h>

#include "kvcache/error.h"
#include "llama/binary_io.h"
#include "llama/token_file.h"

namespace kvstream {

void add_token_input_options(CLI::App& cmd, TokenInput& in, const std::string& max_tokens_help) {
  auto* text =
      cmd.add_option("--text", in.text_file,
                     "UTF-8 text file, tokenized as ONE document: BOS, then the whole file (blank lines and "
                     "newlines kept as byte tokens, as in TinyStories training)");
  auto* tokens = cmd.add_option("--tokens", in.tokens_file,
                                "pre-tokenized llama2.c shard (uint16 little-endian ids, as tinystories.py "
                                "pretokenize writes; stories already start with BOS)");
  text->excludes(tokens);
  tokens->excludes(text);
  cmd.add_option("--max-tokens", in.max_tokens, max_tokens_help)->capture_default_str();
}

std::vector<std::int32_t> load_tokens(const TokenInput& in, const LoadedModel& model,
                                      std::string_view command, std::size_t min_tokens) {
  if (in.text_file.empty() == in.tokens_file.empty()) {
    throw kvcache::InvalidArgument(
        fmt::format("{} needs exactly one of --text FILE or --tokens FILE", command));
  }
  std::vector<std::int32_t> tokens;
  if (in.text_file.empty()) {
    tokens = kvcache::llama::read_token_file(in.tokens_file, model.weights->config.vocab_size);
  } else {
    const auto bytes = kvcache::llama::read_file_bytes(in.text_file, "text file");
    const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    tokens = model.tokenizer->encode(text, model.tokenizer->add_bos_default(), false, false);
  }
  if (in.max_tokens > 0 && tokens.size() > in.max_tokens) tokens.resize(in.max_tokens);
  if (tokens.size() < min_tokens) {
    throw kvcache::InvalidArgument(fmt::format("{} needs at least {} tokens; {} has {}", command, min_tokens,
                                               in.source(), tokens.size()));
  }
  return tokens;
}

}  // namespace kvstream
