// Session records: round trip, and every kind of damage detected with the record named.
#include "session_record.h"

#include <doctest/doctest.h>

#include <string>

#include "kvcache/error.h"

namespace kvserve::test {
namespace {

// Designated initialisers: GCC 12 warns falsely (-Wrestrict) on assigning short literals.
SessionMeta sample_meta() {
  return SessionMeta{.id = "s-abc",
                     .model = "model-fingerprint",
                     .rng_state = 0x1234567890abcdefull,
                     .pending = 42,
                     .last_token = 42,
                     .tokens_prompted = 10,
                     .tokens_generated = 20,
                     .requests = 2,
                     .created_unix = 1.5,
                     .last_used_unix = 2.5,
                     .tokens_seen = 30,
                     .tokens_evicted = 3,
                     .tokens_kept = 27,
                     .tokens_pinned = 4,
                     .kv_bytes = 4096,
                     .origin = "chat",
                     .history = std::vector<std::int32_t>{1, 7, 42}};
}

std::vector<std::byte> snapshot_bytes(std::size_t n) {
  std::vector<std::byte> s(n);
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<std::byte>(i * 31 + 7);
  return s;
}

std::string error_of(std::span<const std::byte> blob) {
  try {
    decode_record(blob, "RECORD-NAME");
  } catch (const kvcache::FormatError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("RECORD-NAME") != std::string::npos);
    return msg;
  }
  FAIL("a damaged record was accepted");
  return {};
}

}  // namespace

TEST_CASE("session record: round trip keeps every field and the snapshot bytes") {
  const auto snap = snapshot_bytes(1000);
  const SessionRecord r = decode_record(encode_record(sample_meta(), snap), "x");
  const SessionMeta want = sample_meta();
  CHECK(r.meta.id == want.id);
  CHECK(r.meta.rng_state == want.rng_state);
  CHECK(r.meta.pending == want.pending);
  CHECK(r.meta.tokens_generated == want.tokens_generated);
  CHECK(r.meta.kv_bytes == want.kv_bytes);
  CHECK(r.meta.last_used_unix == want.last_used_unix);
  CHECK(r.snapshot == snap);
}

TEST_CASE("session record: truncation at any length and any flipped byte are detected") {
  const auto blob = encode_record(sample_meta(), snapshot_bytes(300));
  for (std::size_t n = 0; n < blob.size(); n += 7) {
    const std::string msg = error_of(std::span(blob).first(n));
    CHECK(msg.find("session record") != std::string::npos);
  }
  for (std::size_t i = 0; i < blob.size(); i += 5) {
    auto bad = blob;
    bad[i] ^= std::byte{0x20};
    error_of(bad);
  }
}

namespace {

// A record built by hand: magic, `version`, `meta` as the JSON text, an empty snapshot, and a right
// checksum, so that only the content can be wrong.
std::vector<std::byte> hand_record(std::uint32_t version, const std::string& meta) {
  // Built as a string: GCC 12 warns falsely (-Wstringop-overflow) on inserting into an empty
  // byte vector.
  std::string hand = "KVSESSN";
  hand.push_back('\0');
  const auto put = [&](const auto& v) { hand.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(version);
  put(static_cast<std::uint32_t>(meta.size()));
  hand += meta;
  put(std::uint64_t{0});
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : hand) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  put(h);
  const auto* b = reinterpret_cast<const std::byte*>(hand.data());
  return {b, b + hand.size()};
}

// The meta of a version 1 record (before origin and history).
std::string v1_meta(int pending) {
  return R"({"id":"s-old","model":"m","rng_state":5,"pending":)" + std::to_string(pending) +
         R"(,"last_token":-1,"tokens_prompted":0,"tokens_generated":0,"requests":0,"created_unix":1.0,)"
         R"("last_used_unix":2.0,"tokens_seen":0,"tokens_evicted":0,"tokens_kept":0,"tokens_pinned":0,"kv_bytes":0})";
}

}  // namespace

TEST_CASE("session record: a consistent record with garbage meta is refused") {
  CHECK(error_of(hand_record(2, R"({"id":"x"})")).find("bad meta") != std::string::npos);
  CHECK(error_of(hand_record(3, v1_meta(-1))).find("unsupported version 3") != std::string::npos);
}

TEST_CASE("session record: origin and token history round trip, and an unknown history stays unknown") {
  const SessionRecord r = decode_record(encode_record(sample_meta(), snapshot_bytes(10)), "x");
  CHECK(r.meta.origin == "chat");
  REQUIRE(r.meta.history);
  CHECK(*r.meta.history == std::vector<std::int32_t>{1, 7, 42});
  SessionMeta m = sample_meta();
  m.origin = "api";
  m.history.reset();
  const SessionRecord u = decode_record(encode_record(m, snapshot_bytes(10)), "x");
  CHECK(u.meta.origin == "api");
  CHECK(!u.meta.history);
}

TEST_CASE("session record: version 1 records still load, as api sessions") {
  const SessionRecord empty = decode_record(hand_record(1, v1_meta(-1)), "x");
  CHECK(empty.meta.id == "s-old");
  CHECK(empty.meta.origin == "api");
  REQUIRE(empty.meta.history);  // an empty stream's history is known: it is empty
  CHECK(empty.meta.history->empty());
  const SessionRecord used = decode_record(hand_record(1, v1_meta(9)), "x");
  CHECK(!used.meta.history);  // tokens that were never recorded
}

TEST_CASE("session record: an inconsistent origin or history is refused") {
  SessionMeta m = sample_meta();
  m.history = std::vector<std::int32_t>{1, 7, 41};  // does not end with the pending token 42
  CHECK(error_of(encode_record(m, snapshot_bytes(4))).find("does not end with its pending token") !=
        std::string::npos);
  m.history = std::vector<std::int32_t>{};
  CHECK(error_of(encode_record(m, snapshot_bytes(4))).find("does not end with its pending token") !=
        std::string::npos);
  m = sample_meta();
  m.origin = "robot";
  CHECK(error_of(encode_record(m, snapshot_bytes(4))).find("unknown origin 'robot'") != std::string::npos);
}

}  // namespace kvserve::test
