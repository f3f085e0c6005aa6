// Token shards: uint16 little-endian ids, validated against the vocabulary.
#include "llama/token_file.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "contains.h"
#include "kvcache/error.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

std::vector<std::byte> shard(std::initializer_list<unsigned> ids) {
  std::vector<std::byte> b;
  for (unsigned id : ids) {
    b.push_back(static_cast<std::byte>(id & 0xFF));
    b.push_back(static_cast<std::byte>(id >> 8));
  }
  return b;
}

std::string read_error(const std::vector<std::byte>& bytes) {
  TempFile f("tokens", bytes);
  return format_error_of(f, [&] { read_token_file(f.path(), 512); });
}

}  // namespace

TEST_CASE("token file: reads little-endian uint16 ids") {
  TempFile f("tokens_ok", shard({1, 403, 511, 0, 258}));
  CHECK(read_token_file(f.path(), 512) == std::vector<std::int32_t>{1, 403, 511, 0, 258});
}

TEST_CASE("token file: an id out of range names the id and its byte offset") {
  const std::string msg = read_error(shard({1, 403, 512, 7}));
  CHECK(contains(msg, "token id 512"));
  CHECK(contains(msg, "byte offset 4"));
  CHECK(contains(read_error(shard({65535})), "byte offset 0"));
}

TEST_CASE("token file: odd length and empty files are rejected") {
  auto b = shard({1, 2, 3});
  b.pop_back();
  const std::string msg = read_error(b);
  CHECK(contains(msg, "'length'"));
  CHECK(contains(msg, "odd"));
  CHECK(contains(read_error({}), "no tokens"));
}

TEST_CASE("token file: missing file is an Error naming it") {
  const auto p = std::filesystem::temp_directory_path() / "kvcache_llama_no_such_tokens.bin";
  try {
    read_token_file(p, 512);
    FAIL("read a missing file");
  } catch (const Error& e) {
    CHECK(contains(e.what(), p.string()));
  }
}

TEST_CASE("token file: write then read returns the same ids; bad ids write nothing") {
  TempFile f("tokens_rt", shard({7}));  // overwritten by the writer
  const std::vector<std::int32_t> ids{1, 0, 511, 258, 65535, 256};
  write_token_file(f.path(), ids);
  CHECK(read_token_file(f.path(), 65536) == ids);
  const std::vector<std::int32_t> bad{1, 65536};
  CHECK_THROWS_AS(write_token_file(f.path(), bad), InvalidArgument);
  const std::vector<std::int32_t> negative{-1};
  CHECK_THROWS_AS(write_token_file(f.path(), negative), InvalidArgument);
  CHECK_THROWS_AS(write_token_file(f.path(), std::vector<std::int32_t>{}), InvalidArgument);
  CHECK(read_token_file(f.path(), 65536) == ids);  // the earlier file is untouched
}

}  // namespace kvcache::llama::test
