#include "temp_file.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

namespace kvcache::llama::test {

TempFile::TempFile(std::string_view tag, std::span<const std::byte> bytes) {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() /
          ("kvcache_llama_" + std::string(tag) + "_" + std::to_string(::getpid()) + "_" +
           std::to_string(counter++) + "_" + std::to_string(rd()));
  std::ofstream out(path_, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path_.string());
}

TempFile::~TempFile() {
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

std::filesystem::path shared_dir() { return KVCACHE_SHARED_DIR; }
std::filesystem::path model_path() { return shared_dir() / "models" / "stories260K.bin"; }
std::filesystem::path tokenizer_path() { return shared_dir() / "models" / "tok512.bin"; }
std::filesystem::path sample_text_path() { return shared_dir() / "data" / "tinystories_sample.txt"; }

std::vector<std::byte> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  std::vector<std::byte> data(std::filesystem::file_size(p));
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
  return data;
}

std::string read_text(const std::filesystem::path& p) {
  const auto b = read_bytes(p);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

void put_i32(std::vector<std::byte>& bytes, std::size_t offset, std::int32_t v) {
  std::memcpy(bytes.data() + offset, &v, 4);
}
void put_f32(std::vector<std::byte>& bytes, std::size_t offset, float v) {
  std::memcpy(bytes.data() + offset, &v, 4);
}
void append_i32(std::vector<std::byte>& bytes, std::int32_t v) {
  bytes.resize(bytes.size() + 4);
  put_i32(bytes, bytes.size() - 4, v);
}
void append_f32(std::vector<std::byte>& bytes, float v) {
  bytes.resize(bytes.size() + 4);
  put_f32(bytes, bytes.size() - 4, v);
}

}  // namespace kvcache::llama::test
