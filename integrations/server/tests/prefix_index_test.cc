// The prefix index: the longest whole history a request starts with, verified token by token, so
// that a hash collision, a busy session or an edited conversation never continues a wrong session.
#include "prefix_index.h"

#include <doctest/doctest.h>

#include <map>

namespace kvserve::test {
namespace {

using Tokens = std::vector<std::int32_t>;

struct Sessions {
  std::map<std::string, Tokens> history;
  std::map<std::string, bool> busy;
  PrefixIndex::HistoryOf lookup() {
    return [this](const std::string& id) -> std::optional<std::span<const std::int32_t>> {
      if (busy[id] || !history.count(id)) return std::nullopt;
      return std::span<const std::int32_t>(history[id]);
    };
  }
};

// Every sequence hashes alike: only the token comparison tells sessions apart.
std::uint64_t colliding(std::uint64_t, std::int32_t) { return 7; }

}  // namespace

TEST_CASE("prefix index: the longest whole history the request starts with") {
  Sessions s;
  PrefixIndex index;
  s.history = {{"a", {1, 5, 6}}, {"b", {1, 5, 6, 7, 8}}, {"c", {1, 9}}};
  for (const auto& [id, h] : s.history) index.put(id, h);
  CHECK(index.size() == 3);

  const auto m = index.longest_prefix(Tokens{1, 5, 6, 7, 8, 9, 10}, s.lookup());
  REQUIRE(m);
  CHECK(m->id == "b");
  CHECK(m->length == 5);
  CHECK(index.longest_prefix(Tokens{1, 5, 6, 7}, s.lookup())->id == "a");
  CHECK(index.longest_prefix(Tokens{1, 5, 6}, s.lookup())->id ==
        "a");                                                       // the whole request may be the history
  CHECK(!index.longest_prefix(Tokens{1, 5}, s.lookup()));           // shorter than every history
  CHECK(!index.longest_prefix(Tokens{2, 5, 6, 7, 8}, s.lookup()));  // edited at the start
  CHECK(!index.longest_prefix(Tokens{}, s.lookup()));

  s.busy["b"] = true;  // taken by another request: the next best one
  CHECK(index.longest_prefix(Tokens{1, 5, 6, 7, 8, 9}, s.lookup())->id == "a");
  index.erase("a");
  CHECK(!index.longest_prefix(Tokens{1, 5, 6, 7, 8, 9}, s.lookup()));
  CHECK(!index.contains("a"));
  index.erase("a");  // erasing twice is harmless
  CHECK(index.size() == 2);
}

TEST_CASE("prefix index: a history that changed since it was indexed does not match") {
  Sessions s;
  PrefixIndex index;
  s.history["a"] = {1, 2, 3};
  index.put("a", s.history["a"]);
  s.history["a"] = {1, 2, 4};  // what the session holds now differs from the key
  CHECK(!index.longest_prefix(Tokens{1, 2, 3, 4}, s.lookup()));
  index.put("a", s.history["a"]);  // re-put replaces the key
  CHECK(index.size() == 1);
  CHECK(index.longest_prefix(Tokens{1, 2, 4, 9}, s.lookup())->id == "a");
  CHECK(!index.longest_prefix(Tokens{1, 2, 3, 9}, s.lookup()));
}

TEST_CASE("prefix index: hash collisions are resolved by comparing every token") {
  Sessions s;
  PrefixIndex index(colliding);
  s.history = {{"a", {1, 2, 3}}, {"b", {1, 2, 4}}, {"c", {9, 9, 9}}, {"d", {1, 2}}};
  for (const auto& [id, h] : s.history) index.put(id, h);
  CHECK(index.longest_prefix(Tokens{1, 2, 4, 5}, s.lookup())->id == "b");
  CHECK(index.longest_prefix(Tokens{1, 2, 3, 5}, s.lookup())->id == "a");
  CHECK(index.longest_prefix(Tokens{1, 2, 7}, s.lookup())->id == "d");
  CHECK(!index.longest_prefix(Tokens{9, 9, 8}, s.lookup()));
  CHECK(!index.longest_prefix(Tokens{3, 2, 1, 0}, s.lookup()));
}

TEST_CASE("prefix index: an empty history is never indexed") {
  Sessions s;
  PrefixIndex index;
  s.history["e"] = {};
  index.put("e", s.history["e"]);
  CHECK(index.size() == 0);
  CHECK(!index.longest_prefix(Tokens{1, 2}, s.lookup()));
}

}  // namespace kvserve::test
