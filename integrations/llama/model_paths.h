// Where the runtime finds its checkpoint and tokenizer when the caller does not say.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kvcache::llama {

/// A resolved file and how it was found (for messages such as "model: env KVCACHE_MODEL").
struct ResolvedPath {
  std::filesystem::path path;
  std::string source;  ///< "flag", "env KVCACHE_MODEL", "repo models/", "shared models/"
};

/// Resolves one input file, first match wins:
///  1. `explicit_path` (a command-line flag) when non-empty;
///  2. the environment variable `env_var` when set and non-empty;
///  3. <repo root>/models/<default_name> (git-ignored; scripts/fetch_model.sh fills it);
///  4. <repo root>/../shared/models/<default_name>.
/// The repo root is the source directory this library was built from. An explicit flag or
/// environment value that names a missing file is an error (it is never silently skipped).
/// Throws kvcache::Error naming `what` and every place tried.
ResolvedPath resolve_input(std::string_view what, const std::string& explicit_path, const char* env_var,
                           std::string_view default_name);

/// resolve_input for the checkpoint: flag, KVCACHE_MODEL, then stories260K.bin in the model dirs.
ResolvedPath resolve_model(const std::string& flag_value);
/// resolve_input for the tokenizer: flag, KVCACHE_TOKENIZER, then tok512.bin in the model dirs.
ResolvedPath resolve_tokenizer(const std::string& flag_value);

/// The two default model directories, in search order.
std::vector<std::filesystem::path> default_model_dirs();

}  // namespace kvcache::llama
