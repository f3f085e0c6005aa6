#include "prefix_index.h"

#include <algorithm>
#include <cstring>

namespace kvserve {

std::uint64_t PrefixIndex::fnv1a_step(std::uint64_t state, std::int32_t token) {
  unsigned char bytes[sizeof token];
  std::memcpy(bytes, &token, sizeof token);
  for (unsigned char b : bytes) {
    state ^= b;
    state *= 0x100000001b3ull;
  }
  return state;
}

void PrefixIndex::put(const std::string& id, std::span<const std::int32_t> history) {
  erase(id);
  if (history.empty()) return;
  std::uint64_t h = kHashSeed;
  for (std::int32_t t : history) h = step_(h, t);
  keys_[id] = {history.size(), h};
  by_hash_.emplace(h, id);
  ++lengths_[history.size()];
}

void PrefixIndex::erase(const std::string& id) {
  const auto it = keys_.find(id);
  if (it == keys_.end()) return;
  const auto [first, last] = by_hash_.equal_range(it->second.hash);
  for (auto b = first; b != last; ++b) {
    if (b->second == id) {
      by_hash_.erase(b);
      break;
    }
  }
  if (--lengths_[it->second.length] == 0) lengths_.erase(it->second.length);
  keys_.erase(it);
}

std::optional<PrefixMatch> PrefixIndex::longest_prefix(std::span<const std::int32_t> tokens,
                                                       const HistoryOf& history_of) const {
  // Hashes of the prefixes whose length some session has, longest first.
  std::vector<std::pair<std::size_t, std::uint64_t>> prefixes;
  std::uint64_t h = kHashSeed;
  for (std::size_t n = 1; n <= tokens.size(); ++n) {
    h = step_(h, tokens[n - 1]);
    if (lengths_.count(n)) prefixes.emplace_back(n, h);
  }
  for (auto p = prefixes.rbegin(); p != prefixes.rend(); ++p) {
    const auto [first, last] = by_hash_.equal_range(p->second);
    for (auto c = first; c != last; ++c) {
      if (keys_.at(c->second).length != p->first) continue;
      const std::optional<std::span<const std::int32_t>> history = history_of(c->second);
      if (!history || history->size() != p->first) continue;
      if (std::equal(history->begin(), history->end(), tokens.begin()))
        return PrefixMatch{c->second, p->first};
    }
  }
  return std::nullopt;
}

}  // namespace kvserve
