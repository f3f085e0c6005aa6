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
                     .kv_bytes = 4096};
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

TEST_CASE("session record: a consistent record with garbage meta is refused") {
  SessionMeta m = sample_meta();
  auto blob = encode_record(m, snapshot_bytes(10));
  // Rebuild with a meta JSON that lacks fields: checksum right, content wrong.
  const std::string text = R"({"id":"x"})";
  std::vector<std::byte> hand(blob.begin(), blob.begin() + 12);
  const auto len = static_cast<std::uint32_t>(text.size());
  const auto* l = reinterpret_cast<const std::byte*>(&len);
  hand.insert(hand.end(), l, l + 4);
  const auto* t = reinterpret_cast<const std::byte*>(text.data());
  hand.insert(hand.end(), t, t + text.size());
  const std::uint64_t zero = 0;
  const auto* z = reinterpret_cast<const std::byte*>(&zero);
  hand.insert(hand.end(), z, z + 8);
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::byte b : hand) {
    h ^= static_cast<std::uint8_t>(b);
    h *= 0x100000001b3ull;
  }
  const auto* hp = reinterpret_cast<const std::byte*>(&h);
  hand.insert(hand.end(), hp, hp + 8);
  CHECK(error_of(hand).find("bad meta") != std::string::npos);
}

}  // namespace kvserve::test
