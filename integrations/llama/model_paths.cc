#include "llama/model_paths.h"

#include <cstdlib>
#include <system_error>

#include "kvcache/error.h"

#ifndef KVCACHE_LLAMA_REPO_ROOT
#error "KVCACHE_LLAMA_REPO_ROOT must be defined by the build"
#endif

namespace kvcache::llama {
namespace {

bool is_file(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

}  // namespace

std::vector<std::filesystem::path> default_model_dirs() {
  const std::filesystem::path root(KVCACHE_LLAMA_REPO_ROOT);
  return {root / "models", (root / ".." / "shared" / "models").lexically_normal()};
}

ResolvedPath resolve_input(std::string_view what, const std::string& explicit_path, const char* env_var,
                           std::string_view default_name) {
  const std::string w(what);
  if (!explicit_path.empty()) {
    if (!is_file(explicit_path))
      throw Error(w + " '" + explicit_path + "' (from the command line) is not a file");
    return {explicit_path, "flag"};
  }
  if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') {
    if (!is_file(env)) throw Error(w + " '" + env + "' (from " + env_var + ") is not a file");
    return {env, std::string("env ") + env_var};
  }
  std::string tried;
  const auto dirs = default_model_dirs();
  for (std::size_t i = 0; i < dirs.size(); ++i) {
    const auto p = dirs[i] / default_name;
    if (is_file(p)) return {p, i == 0 ? "repo models/" : "shared models/"};
    tried += (tried.empty() ? "" : ", ") + p.string();
  }
  throw Error("no " + w + " given: pass --" + w + " or set " + env_var + " (also tried " + tried +
              "; scripts/fetch_model.sh downloads it)");
}

ResolvedPath resolve_model(const std::string& flag_value) {
  return resolve_input("model", flag_value, "KVCACHE_MODEL", "stories260K.bin");
}

ResolvedPath resolve_tokenizer(const std::string& flag_value) {
  return resolve_input("tokenizer", flag_value, "KVCACHE_TOKENIZER", "tok512.bin");
}

}  // namespace kvcache::llama
