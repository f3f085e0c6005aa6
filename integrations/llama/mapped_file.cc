#include "llama/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "kvcache/error.h"
#include "llama/binary_io.h"

namespace kvcache::llama {
namespace {

// Closes the descriptor on every path out of the constructor: the mapping does not need it.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

constexpr std::size_t kHugePage = std::size_t{2} << 20;

// Anonymous memory for `size` bytes starting on a 2 MiB boundary (the kernel backs only aligned
// 2 MiB ranges with huge pages), the file read into it, then made read-only. Returns null with
// errno set (and nothing mapped) on failure; a file that shrank while read is EIO.
void* read_into_memory(int fd, std::size_t size) {
  const std::size_t reserve = size + kHugePage;
  void* base = ::mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  const auto b = reinterpret_cast<std::uintptr_t>(base);
  const std::uintptr_t start = (b + kHugePage - 1) & ~(kHugePage - 1);
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t end = (start + size + page - 1) & ~(page - 1);
  if (start > b) ::munmap(base, start - b);
  if (b + reserve > end) ::munmap(reinterpret_cast<void*>(end), b + reserve - end);
  auto* p = reinterpret_cast<char*>(start);
  ::madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP the copy still works
  std::size_t done = 0;
  while (done < size) {
    const ::ssize_t n = ::pread(fd, p + done, size - done, static_cast<::off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n == 0 ? EIO : errno;
      ::munmap(p, size);
      errno = err;
      return nullptr;
    }
    done += static_cast<std::size_t>(n);
  }
  ::mprotect(p, size, PROT_READ);
  return p;
}

}  // namespace

std::string_view file_residence_name(FileResidence r) {
  return r == FileResidence::memory ? "memory" : "mmap";
}

FileResidence parse_file_residence(std::string_view name) {
  if (name == "mmap") return FileResidence::mapped;
  if (name == "memory") return FileResidence::memory;
  throw InvalidArgument("weights residence must be mmap or memory, not '" + std::string(name) + "'");
}

MappedFile::MappedFile(const std::filesystem::path& path, std::string_view what, FileResidence residence) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (fstat then refuses it); it changes
  // nothing for regular files.
  const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (f.fd < 0) {
    const int err = errno;
    throw Error(file_label(what, path) +
                (err == ENOENT ? ": file not found" : ": cannot open: " + std::string(std::strerror(err))));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) {
    throw Error(file_label(what, path) + ": cannot read its size: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) throw Error(file_label(what, path) + ": not a regular file");
  if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) > std::numeric_limits<std::size_t>::max()) {
    throw Error(file_label(what, path) + ": size " + std::to_string(st.st_size) + " cannot be mapped");
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ == 0) return;  // mmap rejects length 0; an empty span is the whole (empty) file
  if (residence == FileResidence::memory) {
    void* p = read_into_memory(f.fd, size_);
    if (p == nullptr) {
      throw Error(file_label(what, path) + ": cannot read " + std::to_string(size_) +
                  " bytes into memory: " + std::strerror(errno));
    }
    data_ = static_cast<const std::byte*>(p);
    return;
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p == MAP_FAILED) {
    throw Error(file_label(what, path) + ": cannot map " + std::to_string(size_) +
                " bytes: " + std::strerror(errno));
  }
  data_ = static_cast<const std::byte*>(p);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace kvcache::llama
