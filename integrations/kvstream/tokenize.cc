#include "tokenize.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "kvcache/error.h"
#include "llama/binary_io.h"
#include "llama/token_file.h"

namespace kvstream {

CLI::App* add_tokenize_command(CLI::App& app, TokenizeOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "tokenize",
      "Encode text files with the model's tokenizer into one llama2.c token file (uint16 little-endian ids). "
      "Each file becomes BOS + the encoding of the whole file, exactly as `ppl --text` reads it, so a "
      "training recipe and the evaluation see the same tokens.");
  // Only the model files matter here (the tokenizer is checked against the model's vocabulary).
  cmd->add_option("--model", o.common.model,
                  "llama2.c checkpoint whose vocabulary size the tokenizer must match (default as for ppl)");
  cmd->add_option("--tokenizer", o.common.tokenizer, "llama2.c tokenizer (default as for ppl)");
  cmd->add_option("--text", o.texts, "UTF-8 text file; repeat for several (concatenated in order)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o.out, "token file to write (replaced; written to a temporary file, then renamed)")
      ->required();
  cmd->add_flag("--json", o.json, "print one JSON object on stdout instead of the human report");
  return cmd;
}

int run_tokenize(const TokenizeOptions& o) {
  const LoadedModel m = load_model(o.common);
  std::vector<std::int32_t> all;
  nlohmann::json files = nlohmann::json::array();
  for (const std::string& path : o.texts) {
    const auto bytes = kvcache::llama::read_file_bytes(path, "text file");
    const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    const std::vector<std::int32_t> ids =
        m.tokenizer->encode(text, m.tokenizer->add_bos_default(), false, false);
    all.insert(all.end(), ids.begin(), ids.end());
    files.push_back({{"path", path}, {"bytes", bytes.size()}, {"tokens", ids.size()}});
  }
  kvcache::llama::write_token_file(o.out, all);
  if (o.json) {
    const nlohmann::json j{{"out", o.out}, {"tokens", all.size()}, {"files", files}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (const auto& f : files) {
      std::printf("%10llu tokens  %10llu bytes  %s\n", f["tokens"].get<unsigned long long>(),
                  f["bytes"].get<unsigned long long>(), f["path"].get<std::string>().c_str());
    }
    std::printf("%10zu tokens written to %s\n", all.size(), o.out.c_str());
  }
  return 0;
}

}  // namespace kvstream
