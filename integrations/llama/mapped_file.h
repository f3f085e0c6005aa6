// A read-only memory mapping of a whole file (RAII over open/mmap/munmap), either the file's own
// pages or a private copy of them (FileResidence).
//
// Caveat (shared with llama.cpp and every mmap-based loader): the mapping reflects the file as it
// is on disk. If another process truncates the file while it is mapped, touching a page past the
// new end raises SIGBUS and kills the process; no bounds check can prevent that, because the
// bytes were inside the file when it was validated. Replace model files by writing a new file and
// renaming it over the old one (what GgufWriter::write does): the mapping keeps the old inode
// alive and stays valid.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

namespace kvcache::llama {

/// Where a MappedFile's bytes live.
enum class FileResidence : std::uint8_t {
  /// The page cache, mapped in place: opening costs nothing, pages load on first touch and are
  /// shared with every process mapping the file. The default, as in llama.cpp.
  mapped,
  /// Read into private anonymous memory at open, 2 MiB aligned and advised for transparent huge
  /// pages (MADV_HUGEPAGE): opening reads the whole file and the copy is private, but a decode step
  /// that streams every weight takes far fewer TLB misses (TinyLlama Q8_0: 10 -> 19 tok/s with one
  /// thread, 25 -> 32 with two; see the README). The truncation caveat above does not apply to it.
  memory,
};

/// "mmap" / "memory"; parse_file_residence is its inverse and throws kvcache::InvalidArgument
/// naming the accepted words for anything else.
std::string_view file_residence_name(FileResidence r);
FileResidence parse_file_residence(std::string_view name);

class MappedFile {
 public:
  /// Maps the regular file at `path` read-only (PROT_READ; MAP_PRIVATE of the file, or of a copy
  /// as `residence` says). An empty file gives an empty span and no mapping. Throws
  /// kvcache::Error naming `what` and the path when the file does not exist, is not a regular
  /// file, or cannot be opened, mapped or (memory) read whole; nothing stays allocated then.
  MappedFile(const std::filesystem::path& path, std::string_view what,
             FileResidence residence = FileResidence::mapped);
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
  std::size_t size_ = 0;             ///< file size in bytes when mapped (munmap covers its pages)
};

}  // namespace kvcache::llama
