// Test helpers: unique temporary files removed on scope exit, and the shared test inputs.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/error.h"

namespace kvcache::llama::test {

/// A file in temp_directory_path() with a unique name, deleted by the destructor.
class TempFile {
 public:
  /// Creates the file with `bytes` as content. `tag` goes into the name (helps when debugging).
  TempFile(std::string_view tag, std::span<const std::byte> bytes);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

/// The FormatError message that `load()` throws for the file `f`, which the message must name;
/// a test failure if it loads or throws anything else.
template <class Load>
std::string format_error_of(const TempFile& f, Load&& load) {
  try {
    load();
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find(f.str()) != std::string::npos, msg);
    return msg;
  } catch (const std::exception& e) {
    FAIL("expected FormatError, got: " << e.what());
  }
  FAIL("expected FormatError, " << f.str() << " loaded");
  return {};
}

/// ../shared relative to the repo (from the build's KVCACHE_SHARED_DIR).
std::filesystem::path shared_dir();
std::filesystem::path model_path();
std::filesystem::path tokenizer_path();
std::filesystem::path sample_text_path();

std::vector<std::byte> read_bytes(const std::filesystem::path& p);
std::string read_text(const std::filesystem::path& p);

/// Little-endian int32 / float at `offset` of `bytes`, overwritten in place.
void put_i32(std::vector<std::byte>& bytes, std::size_t offset, std::int32_t v);
void put_f32(std::vector<std::byte>& bytes, std::size_t offset, float v);
void append_i32(std::vector<std::byte>& bytes, std::int32_t v);
void append_f32(std::vector<std::byte>& bytes, float v);

}  // namespace kvcache::llama::test
