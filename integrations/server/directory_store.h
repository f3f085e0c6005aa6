// DirectoryStore: the first SessionStore, one file per session in a local directory.
#pragma once

#include <filesystem>

#include "session_store.h"

namespace kvserve {

/// Sessions as files `<dir>/<id>.session`. put() writes `<id>.session.tmp`, fsyncs it, renames it
/// over the target and fsyncs the directory, so a crash (even SIGKILL mid-write) leaves the
/// previous file intact and at most a torn `.tmp`, which recover() reports and removes.
/// Other files in the directory are ignored. Thread safety and errors: see SessionStore.
class DirectoryStore final : public SessionStore {
 public:
  /// Creates `dir` if it does not exist (kvcache::Error if it cannot).
  explicit DirectoryStore(std::filesystem::path dir);

  void put(const std::string& id, std::span<const std::byte> blob) override;
  std::optional<std::vector<std::byte>> get(const std::string& id) const override;
  void remove(const std::string& id) override;
  std::vector<std::string> list() const override;
  std::vector<TornWrite> recover() override;
  std::string describe() const override;

  /// Path of `id`'s file (whether or not it exists).
  std::filesystem::path path_of(const std::string& id) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace kvserve
