#include "kvcache/stream/stream_plan.h"

#include <cassert>
#include <string>

#include "kvcache/error.h"

namespace kvcache::detail {
namespace {

std::uint32_t pages_for(std::uint64_t slots, std::uint32_t page_tokens) {
  return static_cast<std::uint32_t>((slots + page_tokens - 1) / page_tokens);
}

}  // namespace

AdmitPlan plan_admit(const Policy& policy, const CacheShape& shape, std::span<const TokenMeta> pinned,
                     const std::deque<TokenMeta>& window, std::uint32_t n_new) {
  AdmitPlan plan;
  const std::uint32_t budget = policy.budget();
  const std::uint32_t P = shape.window_page_tokens;
  const std::uint32_t Pp = shape.pinned_page_tokens;

  // Arrival pins are a prefix of the batch: policies pin on arrival only the earliest positions.
  while (plan.arrival_pins < n_new &&
         policy.on_arrival(shape.next_pos + plan.arrival_pins) != PinReason::none) {
    ++plan.arrival_pins;
  }
  const std::uint32_t n_window_new = n_new - plan.arrival_pins;
  const std::uint64_t kept_after_all = std::uint64_t{pinned.size()} + window.size() + n_new;
  if (kept_after_all >= 0xffffffffull)
    throw InvalidArgument("StreamCache::begin: more than 2^32-2 tokens kept");

  // Simulate the policy on a copy of the pinned metadata (small: bounded by the budget).
  std::vector<TokenMeta> sim(pinned.begin(), pinned.end());
  for (std::uint32_t i = 0; i < plan.arrival_pins; ++i) sim.push_back(TokenMeta{});
  std::uint32_t pinned_peak = static_cast<std::uint32_t>(sim.size());
  std::uint32_t n_window = static_cast<std::uint32_t>(window.size());
  std::uint32_t k = 0;  // next old window token to leave
  while (sim.size() + n_window + n_window_new > budget) {
    if (k == window.size()) {
      throw InvalidArgument("StreamCache::begin: a batch of " + std::to_string(n_new) +
                            " tokens does not fit the budget of " + std::to_string(budget) + " beside " +
                            std::to_string(sim.size()) + " pinned tokens");
    }
    const LeaveDecision d = policy.on_leave(window[k], sim);
    LeaveOp op;
    op.pin = d.pin;
    if (d.release) {
      assert(*d.release < sim.size());
      op.release = true;
      op.release_index = *d.release;
      sim.erase(sim.begin() + *d.release);
    }
    if (d.pin != PinReason::none) {
      sim.push_back(window[k]);
      sim.back().pin = d.pin;
    }
    pinned_peak = std::max(pinned_peak, static_cast<std::uint32_t>(sim.size()));
    plan.leaves.push_back(op);
    --n_window;
    ++k;
  }

  plan.pinned_peak = pinned_peak;
  plan.pinned_final = static_cast<std::uint32_t>(sim.size());
  plan.window_final = n_window + n_window_new;
  const std::uint32_t pinned_pages_peak = pages_for(pinned_peak, Pp);
  plan.pinned_pages_new = pinned_pages_peak > shape.pinned_pages ? pinned_pages_peak - shape.pinned_pages : 0;
  plan.pinned_pages_freed = pinned_pages_peak - pages_for(plan.pinned_final, Pp);

  // Window ring: leaving tokens advance the front; emptied pages drop off the front.
  std::uint32_t front = shape.front + k;
  std::uint32_t pages = shape.window_pages;
  if (n_window == 0) {
    plan.window_pages_dropped = pages;
    front = 0;
  } else {
    plan.window_pages_dropped = front / P;
    front %= P;
  }
  pages -= plan.window_pages_dropped;
  const std::uint32_t pages_needed = pages_for(std::uint64_t{front} + plan.window_final, P);
  plan.window_pages_grown = pages_needed > pages ? pages_needed - pages : 0;
  plan.front_final = plan.window_final == 0 ? 0 : front;
  return plan;
}

}  // namespace kvcache::detail
