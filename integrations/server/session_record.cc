#include "session_record.h"

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "kvcache/error.h"

namespace kvserve {
namespace {

constexpr char kMagic[8] = {'K', 'V', 'S', 'E', 'S', 'S', 'N', '\0'};
constexpr std::uint32_t kVersion = 2;

std::uint64_t fnv1a(std::span<const std::byte> data) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::byte b : data) {
    h ^= static_cast<std::uint8_t>(b);
    h *= 0x100000001b3ull;
  }
  return h;
}

template <class T>
void put(std::vector<std::byte>& out, T v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

}  // namespace

double session_clock_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<std::byte> encode_record(const SessionMeta& m, std::span<const std::byte> snapshot) {
  const nlohmann::json j = {
      {"id", m.id},
      {"model", m.model},
      {"rng_state", m.rng_state},
      {"pending", m.pending},
      {"last_token", m.last_token},
      {"tokens_prompted", m.tokens_prompted},
      {"tokens_generated", m.tokens_generated},
      {"requests", m.requests},
      {"created_unix", m.created_unix},
      {"last_used_unix", m.last_used_unix},
      {"tokens_seen", m.tokens_seen},
      {"tokens_evicted", m.tokens_evicted},
      {"tokens_kept", m.tokens_kept},
      {"tokens_pinned", m.tokens_pinned},
      {"kv_bytes", m.kv_bytes},
      {"origin", m.origin},
      {"history", m.history ? nlohmann::json(*m.history) : nlohmann::json(nullptr)},
  };
  const std::string text = j.dump();
  std::vector<std::byte> out;
  out.reserve(sizeof kMagic + 16 + text.size() + snapshot.size() + 8);
  const auto* magic = reinterpret_cast<const std::byte*>(kMagic);
  out.insert(out.end(), magic, magic + sizeof kMagic);
  put(out, kVersion);
  put(out, static_cast<std::uint32_t>(text.size()));
  const auto* t = reinterpret_cast<const std::byte*>(text.data());
  out.insert(out.end(), t, t + text.size());
  put(out, static_cast<std::uint64_t>(snapshot.size()));
  out.insert(out.end(), snapshot.begin(), snapshot.end());
  put(out, fnv1a(out));
  return out;
}

SessionRecord decode_record(std::span<const std::byte> blob, const std::string& where) {
  auto fail = [&](const std::string& what) -> void {
    throw kvcache::FormatError("session record " + where + ": " + what);
  };
  constexpr std::size_t kFixed = sizeof kMagic + 4 + 4 + 8 + 8;
  if (blob.size() < kFixed) fail("truncated (" + std::to_string(blob.size()) + " bytes)");
  if (std::memcmp(blob.data(), kMagic, sizeof kMagic) != 0) fail("not a session record (bad magic)");
  std::uint64_t stored_sum;
  std::memcpy(&stored_sum, blob.data() + blob.size() - 8, 8);
  if (stored_sum != fnv1a(blob.first(blob.size() - 8)))
    fail("checksum mismatch (torn or corrupted; " + std::to_string(blob.size()) + " bytes)");
  std::size_t at = sizeof kMagic;
  auto get = [&](auto& v) {
    std::memcpy(&v, blob.data() + at, sizeof v);
    at += sizeof v;
  };
  std::uint32_t version = 0, meta_len = 0;
  get(version);
  if (version != 1 && version != kVersion) fail("unsupported version " + std::to_string(version));
  get(meta_len);
  const std::size_t body = blob.size() - 8;
  if (meta_len > body - at - 8) fail("meta length " + std::to_string(meta_len) + " exceeds the record");
  const std::string text(reinterpret_cast<const char*>(blob.data() + at), meta_len);
  at += meta_len;
  std::uint64_t snap_len = 0;
  get(snap_len);
  if (snap_len != body - at)
    fail("snapshot length " + std::to_string(snap_len) + " does not match the record (" +
         std::to_string(body - at) + " bytes left)");

  SessionRecord r;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    SessionMeta& m = r.meta;
    m.id = j.at("id").get<std::string>();
    m.model = j.at("model").get<std::string>();
    m.rng_state = j.at("rng_state").get<std::uint64_t>();
    m.pending = j.at("pending").get<std::int32_t>();
    m.last_token = j.at("last_token").get<std::int32_t>();
    m.tokens_prompted = j.at("tokens_prompted").get<std::uint64_t>();
    m.tokens_generated = j.at("tokens_generated").get<std::uint64_t>();
    m.requests = j.at("requests").get<std::uint64_t>();
    m.created_unix = j.at("created_unix").get<double>();
    m.last_used_unix = j.at("last_used_unix").get<double>();
    m.tokens_seen = j.at("tokens_seen").get<std::uint64_t>();
    m.tokens_evicted = j.at("tokens_evicted").get<std::uint64_t>();
    m.tokens_kept = j.at("tokens_kept").get<std::uint32_t>();
    m.tokens_pinned = j.at("tokens_pinned").get<std::uint32_t>();
    m.kv_bytes = j.at("kv_bytes").get<std::size_t>();
    if (version == 1) {
      m.origin = "api";
      m.history = m.pending < 0 ? std::optional(std::vector<std::int32_t>{}) : std::nullopt;
    } else {
      m.origin = j.at("origin").get<std::string>();
      const nlohmann::json& h = j.at("history");
      m.history = h.is_null() ? std::nullopt : std::optional(h.get<std::vector<std::int32_t>>());
    }
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("bad meta: ") + e.what());
  }
  if (r.meta.origin != "api" && r.meta.origin != "chat") fail("unknown origin '" + r.meta.origin + "'");
  if (r.meta.history) {
    const std::vector<std::int32_t>& h = *r.meta.history;
    if (h.empty() ? r.meta.pending >= 0 : h.back() != r.meta.pending)
      fail("its token history (" + std::to_string(h.size()) + " tokens) does not end with its pending token");
  }
  const auto* s = blob.data() + at;
  r.snapshot.assign(s, s + snap_len);
  return r;
}

}  // namespace kvserve
