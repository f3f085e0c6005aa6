#include "llama/model_config.h"

namespace kvcache::llama {

std::string_view architecture_name(Architecture arch) {
  return arch == Architecture::qwen2 ? "qwen2" : "llama";
}

std::string_view supported_architectures() { return "llama, qwen2"; }

}  // namespace kvcache::llama
