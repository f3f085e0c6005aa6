// One entry point that opens a model file of either supported format, told apart by its magic.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "llama/model_weights.h"

namespace kvcache::llama {

enum class ModelFormat : std::uint8_t {
  llama2c,  ///< llama2.c "legacy" checkpoint (no magic: starts with the int32 dim)
  gguf,     ///< llama.cpp's GGUF (starts with "GGUF")
};

/// The format of the file at `path`, from its first four bytes. Throws kvcache::Error when it
/// cannot be opened or read.
ModelFormat detect_model_format(const std::filesystem::path& path);

/// Opens `path` as a GGUF model (GgufFile::open + load_gguf_model, weights mapped in place) or a
/// llama2.c checkpoint (Checkpoint::load + checkpoint_weights), whichever its magic says. Errors
/// as those functions document.
std::shared_ptr<const ModelWeights> open_model_weights(const std::filesystem::path& path);

}  // namespace kvcache::llama
