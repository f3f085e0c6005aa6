// PrefixIndex: finds the session whose whole token history a request's tokens start with, so that
// a stateless client (one that resends the whole conversation every turn) continues the session
// that already holds that conversation and only its new suffix is fed. Each indexed session is
// keyed by a hash of its history at its last request boundary; a lookup hashes every prefix of
// the request once (O(request tokens)) and then compares candidates token by token, so a hash
// collision can never continue a wrong session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvserve {

/// A match: the session and how many of the request's tokens its history covers.
struct PrefixMatch {
  std::string id;
  std::size_t length = 0;
};

/// Value type; not thread safe (the engine guards it with its lock).
class PrefixIndex {
 public:
  /// Folds one token into a running hash (the state starts at kHashSeed).
  using HashStep = std::uint64_t (*)(std::uint64_t state, std::int32_t token);
  static constexpr std::uint64_t kHashSeed = 0xcbf29ce484222325ull;
  /// FNV-1a-64 over the token's four bytes (the default; tests pass a colliding one).
  static std::uint64_t fnv1a_step(std::uint64_t state, std::int32_t token);

  explicit PrefixIndex(HashStep step = fnv1a_step) : step_(step) {}

  /// Indexes `id` under `history` (replacing what it had). An empty history is not indexed: it
  /// would match every request.
  void put(const std::string& id, std::span<const std::int32_t> history);
  void erase(const std::string& id);
  bool contains(const std::string& id) const { return keys_.count(id) != 0; }
  std::size_t size() const noexcept { return keys_.size(); }

  /// The indexed session with the longest history that `tokens` starts with. `history_of(id)`
  /// returns the session's current history, or nullopt when it cannot take a request now (busy,
  /// corrupt): every candidate's history is compared with `tokens` in full before it is chosen.
  using HistoryOf = std::function<std::optional<std::span<const std::int32_t>>(const std::string& id)>;
  std::optional<PrefixMatch> longest_prefix(std::span<const std::int32_t> tokens,
                                            const HistoryOf& history_of) const;

 private:
  struct Key {
    std::size_t length;
    std::uint64_t hash;
  };
  HashStep step_;
  std::map<std::string, Key> keys_;                              ///< id -> its key
  std::unordered_multimap<std::uint64_t, std::string> by_hash_;  ///< hash -> ids
  std::map<std::size_t, std::size_t> lengths_;                   ///< history length -> ids of that length
};

}  // namespace kvserve
