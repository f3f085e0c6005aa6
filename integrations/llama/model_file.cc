#include "llama/model_file.h"

#include <array>
#include <cstring>
#include <fstream>

#include "kvcache/error.h"
#include "llama/binary_io.h"
#include "llama/checkpoint.h"
#include "llama/gguf_file.h"
#include "llama/gguf_model.h"

namespace kvcache::llama {

ModelFormat detect_model_format(const std::filesystem::path& path) {
  regular_file_size(path, "model");  // a clear error for a missing file or a directory
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(file_label("model", path) + ": cannot open for reading");
  std::array<char, 4> magic{};
  in.read(magic.data(), magic.size());
  // A llama2.c file shorter than 4 bytes is left to Checkpoint::load to reject with its message.
  return in.gcount() == 4 && std::memcmp(magic.data(), "GGUF", 4) == 0 ? ModelFormat::gguf
                                                                       : ModelFormat::llama2c;
}

std::shared_ptr<const ModelWeights> open_model_weights(const std::filesystem::path& path) {
  if (detect_model_format(path) == ModelFormat::gguf) return load_gguf_model(GgufFile::open(path));
  return checkpoint_weights(Checkpoint::load(path));
}

}  // namespace kvcache::llama
