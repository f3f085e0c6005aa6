// SessionStore: where parked sessions go. A small key -> blob interface so that a server can park
// to a local directory today and to a shared store run by others (Redis, an S3-compatible object
// store) later, which is what lets servers behind a load balancer restore each other's sessions
// (see DESIGN.md, "Beyond one machine").
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kvserve {

/// The leftover of a write that never completed (the process died mid-write).
struct TornWrite {
  std::string id;         ///< the session whose write was interrupted
  std::string where;      ///< where it was found (a path for a directory store)
  std::size_t bytes = 0;  ///< how much of it had been written
};

/// Key -> blob storage with atomic replacement.
///
/// Ids are 1-64 characters of [A-Za-z0-9_-] (InvalidArgument otherwise), so every implementation
/// can use them as file names or keys unescaped.
/// Thread safety: implementations must allow concurrent calls for different ids; calls for the
/// same id are serialised by the caller.
/// Errors: kvcache::Error on I/O failure, with the store's location in the message.
class SessionStore {
 public:
  virtual ~SessionStore() = default;

  /// Stores `blob` under `id`, replacing what was there atomically: whatever happens to the
  /// process, a later get() returns either the previous blob or this one, never a mix.
  virtual void put(const std::string& id, std::span<const std::byte> blob) = 0;
  /// The blob stored under `id`, or nullopt when there is none.
  virtual std::optional<std::vector<std::byte>> get(const std::string& id) const = 0;
  /// Removes `id`'s blob (nothing happens when there is none).
  virtual void remove(const std::string& id) = 0;
  /// Every stored id, sorted.
  virtual std::vector<std::string> list() const = 0;
  /// Finds the leftovers of interrupted writes, removes them and reports them. Call at startup,
  /// before any put().
  virtual std::vector<TornWrite> recover() = 0;
  /// One line saying where the store is ("directory /var/lib/kvstream").
  virtual std::string describe() const = 0;
};

/// Whether `id` is a valid session id (see SessionStore).
bool valid_session_id(std::string_view id) noexcept;

}  // namespace kvserve
