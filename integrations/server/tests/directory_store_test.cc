// DirectoryStore: put/get/list/remove, ids that are refused, and a real SIGKILL in the middle of
// a write: the previous blob survives whole and the torn temporary is reported.
#include "directory_store.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "kvcache/error.h"

namespace kvserve::test {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("kvserve_store_" + std::to_string(std::random_device{}()));
  ~TempDir() { fs::remove_all(path); }
};

// A blob whose every byte depends on (generation, index): a mix of two generations is detectable.
std::vector<std::byte> blob(std::uint32_t generation, std::size_t n) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((i * 131 + generation * 7919) >> 3);
  return b;
}

}  // namespace

TEST_CASE("directory store: put, get, list and remove") {
  TempDir dir;
  DirectoryStore store(dir.path / "nested");
  CHECK(store.list().empty());
  CHECK(!store.get("a"));
  store.put("b-1", blob(1, 100));
  store.put("a_2", blob(2, 0));
  store.put("b-1", blob(3, 50));
  CHECK(store.list() == std::vector<std::string>{"a_2", "b-1"});
  CHECK(*store.get("b-1") == blob(3, 50));
  CHECK(store.get("a_2")->empty());
  store.remove("a_2");
  store.remove("a_2");  // absent: nothing happens
  CHECK(store.list() == std::vector<std::string>{"b-1"});
  std::ofstream(dir.path / "nested" / "README") << "ignored";
  CHECK(store.list() == std::vector<std::string>{"b-1"});
  CHECK(store.recover().empty());
}

TEST_CASE("directory store: ids that could escape the directory are refused") {
  TempDir dir;
  DirectoryStore store(dir.path);
  for (const char* id : {"", "../x", "a/b", "a.b", "with space"}) {
    CHECK_THROWS_AS(store.put(id, blob(1, 1)), kvcache::InvalidArgument);
    CHECK_THROWS_AS((void)store.get(id), kvcache::InvalidArgument);
  }
  CHECK_THROWS_AS(store.put(std::string(65, 'a'), blob(1, 1)), kvcache::InvalidArgument);
  CHECK(valid_session_id(std::string(64, 'a')));
}

TEST_CASE("directory store: SIGKILL during a write leaves the previous blob whole and a torn temporary") {
  TempDir dir;
  DirectoryStore store(dir.path);
  constexpr std::size_t kBytes = std::size_t{48} << 20;  // long enough to be caught mid-write
  store.put("s", blob(0, 1024));
  // Made before fork(): the child only writes.
  const std::vector<std::byte> initial = blob(0, 1024), a = blob(1, kBytes), b = blob(2, kBytes);
  bool caught_torn = false;
  for (int attempt = 0; attempt < 6 && !caught_torn; ++attempt) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // the child rewrites the session until it is killed
      for (int g = 0;; ++g) store.put("s", g % 2 ? b : a);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(40 + 30 * attempt));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFSIGNALED(status));

    // Whatever the moment of death, the stored blob is one complete write.
    const auto got = store.get("s");
    REQUIRE(got);
    CHECK_MESSAGE((*got == initial || *got == a || *got == b), "the stored blob is not one complete write");
    const auto torn = store.recover();
    for (const TornWrite& t : torn) {
      CHECK(t.id == "s");
      CHECK(t.bytes <= kBytes);
      caught_torn = caught_torn || t.bytes < kBytes;  // killed before the write completed
    }
    CHECK(store.recover().empty());  // reported once, then removed
  }
  CHECK_MESSAGE(caught_torn, "no kill landed in the middle of a write");
}

}  // namespace kvserve::test
