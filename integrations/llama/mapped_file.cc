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

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path, std::string_view what) {
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
