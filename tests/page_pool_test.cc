#include "kvcache/page_pool.h"

#include <doctest/doctest.h>
#include <sanitizer/asan_interface.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kvcache/error.h"

using namespace kvcache;

TEST_CASE("pool rejects bad options") {
  CHECK_THROWS_AS(PagePool(PagePoolOptions{0, 1 << 20}), InvalidArgument);
  CHECK_THROWS_AS(PagePool(PagePoolOptions{4096, 100}), InvalidArgument);
  CHECK_THROWS_AS(PagePool(PagePoolOptions{std::size_t{1} << 32, std::size_t{1} << 33}), InvalidArgument);
}

TEST_CASE("pages are 64-byte aligned, distinct and writable") {
  PagePool pool({100, 100 * 128, 1000});
  CHECK(pool.page_bytes() == 128);
  std::vector<PageId> ids;
  std::set<std::byte*> seen;
  for (int i = 0; i < 100; ++i) {
    ids.push_back(pool.allocate());
    std::byte* p = pool.data(ids.back());
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
    CHECK(seen.insert(p).second);
    std::memset(p, i, 128);
  }
  for (int i = 0; i < 100; ++i) CHECK(pool.data(ids[i])[127] == std::byte(i));
  for (PageId id : ids) pool.release(id);
}

TEST_CASE("exhaustion is reported and recoverable") {
  PagePool pool({64, 64 * 10, 64 * 4});
  std::vector<PageId> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(pool.allocate());
  CHECK_THROWS_AS(pool.allocate(), PoolExhausted);
  CHECK_FALSE(pool.try_allocate().has_value());
  CHECK(pool.stats().failed_allocations == 2);
  CHECK(pool.stats().pages_in_use == 10);
  pool.release(ids.back());
  ids.pop_back();
  ids.push_back(pool.allocate());
  CHECK(pool.stats().arenas == 3);  // 4 + 4 + 2 pages, carved lazily
  for (PageId id : ids) pool.release(id);
  CHECK(pool.stats().pages_in_use == 0);
  CHECK(pool.stats().pages_free == 10);
  CHECK(pool.stats().pages_high_water == 10);
}

TEST_CASE("double release and foreign ids are rejected without corrupting the pool") {
  PagePool pool({64, 64 * 8});
  const PageId a = pool.allocate();
  pool.release(a);
  CHECK_THROWS_AS(pool.release(a), InvalidArgument);
  CHECK_THROWS_AS(pool.release(12345), InvalidArgument);
  CHECK(pool.stats().pages_in_use == 0);
  CHECK(pool.stats().pages_free == pool.stats().pages_reserved);
  std::set<PageId> distinct;
  for (int i = 0; i < 8; ++i) CHECK(distinct.insert(pool.allocate()).second);
  for (PageId id : distinct) pool.release(id);
}

TEST_CASE("stats match a model count after random operations") {
  PagePool pool({192, 192 * 300, 192 * 32});
  std::mt19937 rng(1234);
  std::vector<PageId> held;
  std::size_t high = 0;
  for (int step = 0; step < 20000; ++step) {
    if (held.empty() || rng() % 100 < 55) {
      if (auto id = pool.try_allocate()) {
        CHECK(std::find(held.begin(), held.end(), *id) == held.end());
        held.push_back(*id);
      } else {
        CHECK(held.size() == 300);
      }
    } else {
      const std::size_t i = rng() % held.size();
      pool.release(held[i]);
      held[i] = held.back();
      held.pop_back();
    }
    high = std::max(high, held.size());
    const PagePoolStats s = pool.stats();
    REQUIRE(s.pages_in_use == held.size());
    REQUIRE(s.pages_free + s.pages_in_use == s.pages_reserved);
    REQUIRE(s.bytes_in_use == held.size() * 192);
  }
  CHECK(pool.stats().pages_high_water == high);
  for (PageId id : held) pool.release(id);
}

TEST_CASE("concurrent allocate and release on 8 threads keep exact accounting") {
  PagePool pool({64, 64 * 4096, 64 * 256});
  std::atomic<std::size_t> failures{0};
  auto work = [&](int t) {
    std::mt19937 rng(static_cast<unsigned>(t));
    std::vector<PageId> mine;
    for (int i = 0; i < 20000; ++i) {
      if (mine.empty() || rng() % 2 == 0) {
        if (auto id = pool.try_allocate()) {
          // Tag the page: a page handed to two owners at once would be overwritten.
          std::memcpy(pool.data(*id), &t, sizeof t);
          mine.push_back(*id);
        }
      } else {
        int tag;
        std::memcpy(&tag, pool.data(mine.back()), sizeof tag);
        if (tag != t) failures.fetch_add(1);
        pool.release(mine.back());
        mine.pop_back();
      }
    }
    for (PageId id : mine) pool.release(id);
  };
  std::vector<std::thread> threads;  // std::thread, not oneTBB: see stream_concurrency_test.cc
  for (int t = 0; t < 8; ++t) threads.emplace_back(work, t);
  for (std::thread& t : threads) t.join();
  CHECK(failures.load() == 0);
  const PagePoolStats s = pool.stats();
  CHECK(s.pages_in_use == 0);
  CHECK(s.pages_free == s.pages_reserved);
}

TEST_CASE("destroying a pool with pages still out is reported, not undefined") {
  // Capture stderr in a temporary file while the pool dies.
  std::FILE* capture = std::tmpfile();
  REQUIRE(capture != nullptr);
  std::fflush(stderr);
  const int saved = ::dup(::fileno(stderr));
  ::dup2(::fileno(capture), ::fileno(stderr));
  {
    PagePool pool({64, 64 * 8});
    pool.allocate();
    pool.allocate();
  }
  std::fflush(stderr);
  ::dup2(saved, ::fileno(stderr));
  ::close(saved);
  std::rewind(capture);
  char text[256] = {};
  const std::size_t n = std::fread(text, 1, sizeof text - 1, capture);
  std::fclose(capture);
  CHECK(std::string(text, n).find("2 page(s) still allocated") != std::string::npos);
}

#if defined(__SANITIZE_ADDRESS__)
TEST_CASE("under ASan, released pages are poisoned") {
  PagePool pool({64, 64 * 8});
  const PageId id = pool.allocate();
  std::byte* p = pool.data(id);
  CHECK_FALSE(__asan_address_is_poisoned(p));
  pool.release(id);
  CHECK(__asan_address_is_poisoned(p));
  const PageId again = pool.allocate();
  CHECK_FALSE(__asan_address_is_poisoned(pool.data(again)));
  pool.release(again);
}
#endif
