#include "directory_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "kvcache/error.h"

namespace kvserve {
namespace {

constexpr std::string_view kSuffix = ".session";
constexpr std::string_view kTmpSuffix = ".session.tmp";

void check_id(const std::string& id) {
  if (!valid_session_id(id))
    throw kvcache::InvalidArgument("session id '" + id + "' is not [A-Za-z0-9_-]{1,64}");
}

std::string errno_text() { return std::strerror(errno); }

void fsync_dir(const std::filesystem::path& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;  // a file system without directory handles: the rename is as durable as it gets
  ::fsync(dfd);
  ::close(dfd);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

bool valid_session_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

DirectoryStore::DirectoryStore(std::filesystem::path dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec || !std::filesystem::is_directory(dir_))
    throw kvcache::Error("session store " + dir_.string() + ": cannot create the directory: " + ec.message());
}

std::filesystem::path DirectoryStore::path_of(const std::string& id) const {
  return dir_ / (id + std::string(kSuffix));
}

void DirectoryStore::put(const std::string& id, std::span<const std::byte> blob) {
  check_id(id);
  const std::string target = path_of(id).string();
  const std::string tmp = target + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw kvcache::Error("session store: cannot create " + tmp + ": " + errno_text());
  std::size_t done = 0;
  while (done < blob.size()) {
    const ssize_t n = ::write(fd, blob.data() + done, blob.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw kvcache::Error("session store: writing " + tmp + " failed: " + why);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    throw kvcache::Error("session store: fsync of " + tmp + " failed: " + why);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw kvcache::Error("session store: renaming " + tmp + " failed: " + why);
  }
  fsync_dir(dir_);
}

std::optional<std::vector<std::byte>> DirectoryStore::get(const std::string& id) const {
  check_id(id);
  const std::filesystem::path p = path_of(id);
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(p)) return std::nullopt;
    throw kvcache::Error("session store: cannot open " + p.string() + ": " + errno_text());
  }
  std::vector<std::byte> data;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw kvcache::Error("session store: cannot read the size of " + p.string());
  in.seekg(0);
  data.resize(static_cast<std::size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(data.data()), size))
    throw kvcache::Error("session store: reading " + p.string() + " failed");
  return data;
}

void DirectoryStore::remove(const std::string& id) {
  check_id(id);
  std::error_code ec;
  std::filesystem::remove(path_of(id), ec);
  if (ec) throw kvcache::Error("session store: cannot remove " + path_of(id).string() + ": " + ec.message());
  fsync_dir(dir_);
}

std::vector<std::string> DirectoryStore::list() const {
  std::vector<std::string> ids;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || !ends_with(name, kSuffix)) continue;
    const std::string id = name.substr(0, name.size() - kSuffix.size());
    if (valid_session_id(id)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<TornWrite> DirectoryStore::recover() {
  std::vector<TornWrite> torn;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || !ends_with(name, kTmpSuffix)) continue;
    const std::string id = name.substr(0, name.size() - kTmpSuffix.size());
    if (!valid_session_id(id)) continue;
    torn.push_back({id, entry.path().string(), static_cast<std::size_t>(entry.file_size())});
  }
  for (const TornWrite& t : torn) std::filesystem::remove(t.where);
  if (!torn.empty()) fsync_dir(dir_);
  std::sort(torn.begin(), torn.end(), [](const TornWrite& a, const TornWrite& b) { return a.id < b.id; });
  return torn;
}

std::string DirectoryStore::describe() const { return "directory " + dir_.string(); }

}  // namespace kvserve
