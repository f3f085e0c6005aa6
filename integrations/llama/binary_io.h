// Bounds-checked reading of the little-endian binary files the runtime loads (checkpoints,
// tokenizers, token shards). Every failure is a kvcache::FormatError (or kvcache::Error when the
// file cannot be opened) whose message names the file and the field being read.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvcache::llama {

// The formats are little-endian and are read with memcpy; a big-endian host would need swaps.
static_assert(std::endian::native == std::endian::little, "kvcache_llama assumes a little-endian host");

/// Size in bytes of the regular file at `path`. Throws kvcache::Error naming `what` and the path
/// when it does not exist or is not a regular file.
std::uint64_t regular_file_size(const std::filesystem::path& path, std::string_view what);

/// The whole content of the regular file at `path` (read once). Throws kvcache::Error naming
/// `what` and the path when it cannot be opened or read completely.
std::vector<std::byte> read_file_bytes(const std::filesystem::path& path, std::string_view what);

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so a reader sees the
/// old file or the whole new one and a failure leaves no partial file. Throws kvcache::Error
/// "<what> '<path>': cannot write: ..." (or "cannot rename into place: ...").
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes,
                           std::string_view what);

/// Sequential reader over a byte buffer it does not own. Each read names the field it reads, so a
/// short buffer yields "<what> '<file>': truncated: field '<field>' needs N bytes at offset O, but
/// the file has M bytes". Not thread safe (it has a cursor); cheap to construct.
class ByteReader {
 public:
  ByteReader(std::span<const std::byte> data, const std::string& file, std::string_view what);

  std::int32_t i32(std::string_view field);
  float f32(std::string_view field);
  /// The next `n` bytes (a view into the buffer).
  std::span<const std::byte> bytes(std::size_t n, std::string_view field);

  std::size_t offset() const noexcept { return offset_; }
  std::size_t remaining() const noexcept { return data_.size() - offset_; }
  /// "<what> '<file>'", the prefix of every message about this file.
  const std::string& label() const noexcept { return label_; }
  /// Throws FormatError "<label>: <message>".
  [[noreturn]] void fail(std::string_view message) const;

 private:
  std::span<const std::byte> data_;  ///< the whole file
  std::size_t offset_ = 0;           ///< bytes consumed so far
  std::string label_;                ///< "<what> '<file>'"
};

/// "<what> '<path>'": how every loader names its file in messages.
std::string file_label(std::string_view what, const std::filesystem::path& path);

}  // namespace kvcache::llama
