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

}  // namespace

std::string_view policy_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::full: return "full";
    case PolicyKind::window: return "window";
    case PolicyKind::sinks: return "sinks";
    case PolicyKind::hidden_sinks: return "hidden-sinks";
    case PolicyKind::h2o: return "h2o";
  }
  return "unknown";
}

PolicyKind parse_policy(std::string_view name) {
  for (PolicyKind k : {PolicyKind::full, PolicyKind::window, PolicyKind::sinks, PolicyKind::hidden_sinks,
                       PolicyKind::h2o}) {
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
    case PolicyKind::h2o:
      break;
  }
  throw InvalidArgument("policy " + name + " is not available in this build");
}

std::uint32_t window_overflow(std::uint32_t n_pinned, std::uint32_t n_window, std::uint32_t n_new,
                              std::uint32_t budget) {
  const std::uint64_t want = std::uint64_t{n_pinned} + n_window + n_new;
  if (want <= budget) return 0;
  const std::uint64_t over = want - budget;
  return over < n_window ? static_cast<std::uint32_t>(over) : n_window;
}

}  // namespace kvcache
