// Retention policies: which tokens a StreamCache keeps under a token budget.
//
// Every policy shares one mechanism (see StreamCache): a *pinned* region, compacted into pinned
// pages, and a *window* of the most recent tokens in a ring of pages. Policies only decide
//  - whether an arriving token is pinned at once (initial sinks), and
//  - what happens to the oldest window token when the cache is over budget: evict it, or pin it
//    (a detected hidden sink, a heavy hitter), possibly releasing a pinned token to make room.
// Decisions are pure functions of token metadata, so they are tested without a pool.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace kvcache {

enum class PolicyKind : std::uint8_t {
  full,          ///< keep everything (no budget)
  window,        ///< the last `budget` tokens
  sinks,         ///< StreamingLLM: the first `sinks` tokens + the last `budget - sinks`
  hidden_sinks,  ///< initial sinks + up to `hidden_sinks` detected sinks + window (SinkDetector)
  h2o,           ///< H2O: `heavy` heavy hitters by accumulated attention + recent window
};

std::string_view policy_name(PolicyKind kind);
/// Parses "full", "window", "sinks", "hidden-sinks", "h2o"; throws InvalidArgument otherwise.
PolicyKind parse_policy(std::string_view name);

/// Plain description of a policy; validated by make_policy().
struct PolicyConfig {
  PolicyKind kind = PolicyKind::full;
  std::uint32_t budget = 0;          ///< total tokens kept per layer, pinned included; unused by full
  std::uint32_t sinks = 4;           ///< initial tokens pinned on arrival (sinks, hidden_sinks)
  std::uint32_t hidden_sinks = 8;    ///< cap on detected sinks pinned (hidden_sinks)
  std::uint32_t heavy = 0;           ///< heavy-hitter slots (h2o); 0 means budget / 2
  std::uint16_t min_sink_heads = 2;  ///< (layer, head) pairs a detected sink needs (hidden_sinks)

  static PolicyConfig full() { return {}; }
  static PolicyConfig window(std::uint32_t budget) { return {PolicyKind::window, budget, 0, 0, 0, 0}; }
  static PolicyConfig streaming(std::uint32_t sinks, std::uint32_t budget) {
    return {PolicyKind::sinks, budget, sinks, 0, 0, 0};
  }
  static PolicyConfig hidden(std::uint32_t sinks, std::uint32_t hidden_sinks, std::uint32_t budget,
                             std::uint16_t min_sink_heads = 2) {
    return {PolicyKind::hidden_sinks, budget, sinks, hidden_sinks, 0, min_sink_heads};
  }
  static PolicyConfig heavy_hitters(std::uint32_t heavy, std::uint32_t budget) {
    return {PolicyKind::h2o, budget, 0, 0, heavy, 0};
  }
};

/// Why a token sits in the pinned region.
enum class PinReason : std::uint8_t { none, initial, hidden_sink, heavy_hitter };

/// Per-token metadata the cache keeps for every kept token (shared by all layers).
struct TokenMeta {
  std::int64_t pos = 0;             ///< original position in the stream, 0-based
  std::int32_t token = -1;          ///< token id given to StreamCache::begin
  float score = 0.f;                ///< accumulated attention mass (fed by observers such as H2O)
  std::uint16_t sink_heads = 0;     ///< (layer, head) pairs where a detector calls it a sink (SinkDetector:
                                    ///< window evidence, frozen once pinned)
  PinReason pin = PinReason::none;  ///< why it is pinned, none in the window
};

/// What to do with the oldest window token when the cache is over budget.
struct LeaveDecision {
  PinReason pin = PinReason::none;       ///< none = evict it; otherwise pin it for this reason
  std::optional<std::uint32_t> release;  ///< index into the pinned region to release first
};

/// A retention policy. Implementations are immutable after construction: thread safe.
class Policy {
 public:
  virtual ~Policy() = default;
  virtual const PolicyConfig& config() const = 0;
  /// Most tokens kept per layer (UINT32_MAX for full).
  virtual std::uint32_t budget() const = 0;
  /// Pin reason for a token arriving at original position `pos` (none = goes to the window).
  virtual PinReason on_arrival(std::int64_t pos) const = 0;
  /// Decision for `leaving`, the oldest window token, given the current pinned region.
  virtual LeaveDecision on_leave(const TokenMeta& leaving, std::span<const TokenMeta> pinned) const = 0;
};

/// Builds the policy `config` describes. Throws InvalidArgument naming the bad field
/// (budget 0, sinks >= budget, ...).
std::unique_ptr<Policy> make_policy(const PolicyConfig& config);

/// The window rule as one pure function: how many of the oldest window tokens must leave so that
/// `n_pinned + n_window + n_new <= budget`, never more than n_window.
std::uint32_t window_overflow(std::uint32_t n_pinned, std::uint32_t n_window, std::uint32_t n_new,
                              std::uint32_t budget);

}  // namespace kvcache
