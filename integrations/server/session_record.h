// A parked session as one self-checking blob: the session's own state (sampler RNG, the token
// sampled but not yet fed, counters) beside the KV cache snapshot, so one atomic put() stores both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kvserve {

/// Seconds since the epoch from the system clock: the clock of SessionMeta's *_unix fields.
double session_clock_now();

/// What a session is besides its KV cache.
struct SessionMeta {
  std::string id;
  std::string model;             ///< model fingerprint (see Engine); a mismatch is not restored
  std::uint64_t rng_state = 0;   ///< the sampler's RNG state (llama::Sampler::rng_state); 0 = not seeded yet
  std::int32_t pending = -1;     ///< last sampled token, not yet fed to the model; -1 = none
  std::int32_t last_token = -1;  ///< last token of the stream (fed or pending); -1 = empty stream
  std::uint64_t tokens_prompted = 0;   ///< prompt tokens fed over all requests (BOS included)
  std::uint64_t tokens_generated = 0;  ///< tokens sampled over all requests
  std::uint64_t requests = 0;          ///< completions served
  double created_unix = 0;             ///< seconds since the epoch
  double last_used_unix = 0;
  // Cache statistics when the record was written (for status reports without a restore).
  std::uint64_t tokens_seen = 0, tokens_evicted = 0;
  std::uint32_t tokens_kept = 0, tokens_pinned = 0;
  std::size_t kv_bytes = 0;  ///< bytes of pages it held
  /// "api" (made by POST /v1/sessions, kept until deleted) or "chat" (made by a stateless chat
  /// request: found by the prefix index, dropped least recently used first at --max-sessions).
  std::string origin = "api";
  /// Every token of the stream in order (fed, then the pending one), while every request on it
  /// was a chat request; nullopt once /v1/completions continued it (the chat endpoint then
  /// refuses it: it cannot check a conversation against a history it does not have).
  std::optional<std::vector<std::int32_t>> history = std::vector<std::int32_t>{};
};

/// Layout: char[8] "KVSESSN\0" | u32 version (2) | u32 meta length | meta as JSON |
/// u64 snapshot length | snapshot (StreamCache::save's file) | u64 FNV-1a-64 of everything before.
/// Version 2 added "origin" and "history" (an array of token ids, or null) to the meta; version 1
/// records still decode, as "api" sessions whose history is known only when their stream is empty.
std::vector<std::byte> encode_record(const SessionMeta& meta, std::span<const std::byte> snapshot);

struct SessionRecord {
  SessionMeta meta;
  std::vector<std::byte> snapshot;
};

/// Parses a blob from encode_record. Throws kvcache::FormatError naming `where` and what is wrong
/// (truncated, bad magic or version, checksum mismatch, a missing or mistyped meta field, an
/// unknown origin, a history that does not end with the pending token).
SessionRecord decode_record(std::span<const std::byte> blob, const std::string& where);

}  // namespace kvserve
