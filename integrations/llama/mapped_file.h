// A read-only memory mapping of a whole file (RAII over open/mmap/munmap).
//
// Caveat (shared with llama.cpp and every mmap-based loader): the mapping reflects the file as it
// is on disk. If another process truncates the file while it is mapped, touching a page past the
// new end raises SIGBUS and kills the process; no bounds check can prevent that, because the
// bytes were inside the file when it was validated. Replace model files by writing a new file and
// renaming it over the old one (what GgufWriter::write does): the mapping keeps the old inode
// alive and stays valid.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string_view>

namespace kvcache::llama {

class MappedFile {
 public:
  /// Maps the regular file at `path` read-only (MAP_PRIVATE, PROT_READ). An empty file gives an
  /// empty span and no mapping. Throws kvcache::Error naming `what` and the path when the file does
  /// not exist, is not a regular file, or cannot be opened or mapped.
  MappedFile(const std::filesystem::path& path, std::string_view what);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  /// The file's bytes as they were mapped: the first byte is page aligned. Valid while this object
  /// lives (and the file is not truncated by someone else: see the caveat above).
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  const std::byte* data_ = nullptr;  ///< start of the mapping, or null for an empty file
  std::size_t size_ = 0;             ///< file size in bytes when mapped
};

}  // namespace kvcache::llama
