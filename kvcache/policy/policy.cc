// The retention policies. Each is a small immutable object answering two questions (see
// policy.h); the mechanism that applies the answers lives in StreamCache.
#include "kvcache/policy.h"

#include <limits>
#include <string>

#include "kvcache/error.h"

namespace kvcache {
namespace {

constexpr std::uint32_t kUnbounded = std::numeric_limits<std::uint32_t>::max();

class FullPolicy final : public Policy {
 public:
  explicit FullPolicy(const PolicyConfig& c) : config_(c) {}
  const PolicyConfig& config() const override { return config_; }
  std::uint32_t budget() const override { return kUnbounded; }
  PinReason on_arrival(std::int64_t) const override { return PinReason::none; }
  LeaveDecision on_leave(const TokenMeta&, std::span<const TokenMeta>) const override { return {}; }

 private:
  PolicyConfig config_;
};

// window (sinks == 0) and StreamingLLM (sinks > 0): the first `sinks` tokens are pinned on
// arrival, everything else leaves in arrival order.
class SinkWindowPolicy final : public Policy {
 public:
  explicit SinkWindowPolicy(const PolicyConfig& c) : config_(c) {}
  const PolicyConfig& config() const override { return config_; }
  std::uint32_t budget() const override { return config_.budget; }
  PinReason on_arrival(std::int64_t pos) const override {
    return pos < std::int64_t{config_.sinks} ? PinReason::initial : PinReason::none;
  }
  LeaveDecision on_leave(const TokenMeta&, std::span<const TokenMeta>) const override { return {}; }

 private:
  PolicyConfig config_;
};

// Initial sinks + detected hidden sinks (TokenMeta::sink_heads, from a SinkDetector) + window.
// A leaving token with enough sink heads is pinned while fewer than `hidden_sinks` are; when the
// cap is reached it replaces the weakest pinned hidden sink if it is stronger. A pinned hidden
// sink whose count is zero is released the next time a token leaves. SinkDetector freezes a
// token's count when it is pinned (it must not earn its place from the attention it gets because
// it is kept), so with the detector a pinned sink leaves only for a stronger one; the release rule
// serves counts set by other means (StreamCache::set_sink_heads).
class HiddenSinkPolicy final : public Policy {
 public:
  explicit HiddenSinkPolicy(const PolicyConfig& c) : config_(c) {}
  const PolicyConfig& config() const override { return config_; }
  std::uint32_t budget() const override { return config_.budget; }
  PinReason on_arrival(std::int64_t pos) const override {
    return pos < std::int64_t{config_.sinks} ? PinReason::initial : PinReason::none;
  }
  LeaveDecision on_leave(const TokenMeta& leaving, std::span<const TokenMeta> pinned) const override {
    std::uint32_t n_hidden = 0;
    std::optional<std::uint32_t> weakest, decayed;
    for (std::uint32_t i = 0; i < pinned.size(); ++i) {
      if (pinned[i].pin != PinReason::hidden_sink) continue;
      ++n_hidden;
      if (pinned[i].sink_heads == 0 && !decayed) decayed = i;
      if (!weakest || pinned[i].sink_heads < pinned[*weakest].sink_heads) weakest = i;
    }
    LeaveDecision d;
    d.release = decayed;
    if (leaving.sink_heads < config_.min_sink_heads || config_.hidden_sinks == 0) return d;
    if (n_hidden - (decayed ? 1 : 0) < config_.hidden_sinks) {
      d.pin = PinReason::hidden_sink;
    } else if (weakest && leaving.sink_heads > pinned[*weakest].sink_heads) {
      d.pin = PinReason::hidden_sink;
      d.release = weakest;
    }
    return d;
  }

 private:
  PolicyConfig config_;
};

// H2O (Zhang et al., 2023): a recent window plus `heavy` tokens with the largest accumulated
// attention (TokenMeta::score). A leaving token takes a free heavy slot, or replaces the pinned
// heavy hitter with the lowest score if its own score is higher; otherwise it is evicted.
class HeavyHitterPolicy final : public Policy {
 public:
  explicit HeavyHitterPolicy(const PolicyConfig& c) : config_(c) {}
  const PolicyConfig& config() const override { return config_; }
  std::uint32_t budget() const override { return config_.budget; }
  PinReason on_arrival(std::int64_t) const override { return PinReason::none; }
  LeaveDecision on_leave(const TokenMeta& leaving, std::span<const TokenMeta> pinned) const override {
    LeaveDecision d;
    if (pinned.size() < config_.heavy) {
      d.pin = PinReason::heavy_hitter;
      return d;
    }
    std::uint32_t weakest = 0;
    for (std::uint32_t i = 1; i < pinned.size(); ++i) {
      if (pinned[i].score < pinned[weakest].score) weakest = i;
    }
    if (!pinned.empty() && leaving.score > pinned[weakest].score) {
      d.pin = PinReason::heavy_hitter;
      d.release = weakest;
    }
    return d;
  }

 private:
  PolicyConfig config_;
};

}  // namespace

std::string_view policy_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::full:
      return "full";
    case PolicyKind::window:
      return "window";
    case PolicyKind::sinks:
      return "sinks";
    case PolicyKind::hidden_sinks:
      return "hidden-sinks";
    case PolicyKind::h2o:
      return "h2o";
  }
  return "unknown";
}

PolicyKind parse_policy(std::string_view name) {
  for (PolicyKind k :
       {PolicyKind::full, PolicyKind::window, PolicyKind::sinks, PolicyKind::hidden_sinks, PolicyKind::h2o}) {
    if (policy_name(k) == name) return k;
  }
  throw InvalidArgument("unknown policy '" + std::string(name) +
                        "' (expected full, window, sinks, hidden-sinks or h2o)");
}

std::unique_ptr<Policy> make_policy(const PolicyConfig& config) {
  const std::string name(policy_name(config.kind));
  switch (config.kind) {
    case PolicyKind::full:
      return std::make_unique<FullPolicy>(config);
    case PolicyKind::window: {
      if (config.budget == 0) throw InvalidArgument("policy window: budget must be > 0");
      PolicyConfig c = config;
      c.sinks = 0;
      return std::make_unique<SinkWindowPolicy>(c);
    }
    case PolicyKind::sinks:
      if (config.budget == 0) throw InvalidArgument("policy sinks: budget must be > 0");
      if (config.sinks >= config.budget) {
        throw InvalidArgument("policy sinks: sinks (" + std::to_string(config.sinks) +
                              ") must be smaller than budget (" + std::to_string(config.budget) +
                              ") so the window keeps at least one token");
      }
      return std::make_unique<SinkWindowPolicy>(config);
    case PolicyKind::hidden_sinks:
      if (config.budget == 0) throw InvalidArgument("policy hidden-sinks: budget must be > 0");
      if (std::uint64_t{config.sinks} + config.hidden_sinks >= config.budget) {
        throw InvalidArgument("policy hidden-sinks: sinks (" + std::to_string(config.sinks) +
                              ") + hidden_sinks (" + std::to_string(config.hidden_sinks) +
                              ") must be smaller than budget (" + std::to_string(config.budget) +
                              ") so the window keeps at least one token");
      }
      if (config.min_sink_heads == 0)
        throw InvalidArgument("policy hidden-sinks: min_sink_heads must be > 0");
      return std::make_unique<HiddenSinkPolicy>(config);
    case PolicyKind::h2o: {
      if (config.budget < 2) throw InvalidArgument("policy h2o: budget must be >= 2");
      PolicyConfig c = config;
      c.sinks = 0;
      if (c.heavy == 0) c.heavy = c.budget / 2;
      if (c.heavy >= c.budget) {
        throw InvalidArgument("policy h2o: heavy (" + std::to_string(c.heavy) +
                              ") must be smaller than budget (" + std::to_string(c.budget) + ")");
      }
      return std::make_unique<HeavyHitterPolicy>(c);
    }
  }
  throw InvalidArgument("policy " + name + " is unknown");
}

std::uint32_t window_overflow(std::uint32_t n_pinned, std::uint32_t n_window, std::uint32_t n_new,
                              std::uint32_t budget) {
  const std::uint64_t want = std::uint64_t{n_pinned} + n_window + n_new;
  if (want <= budget) return 0;
  const std::uint64_t over = want - budget;
  return over < n_window ? static_cast<std::uint32_t>(over) : n_window;
}

}  // namespace kvcache
