// Fuzzes sequences of public API calls against one PagePool shared by up to four streams.
//
// Each input is a program: a pool (sizes fuzzed, some invalid), then up to kMaxOps operations
// chosen by the input: create streams with fuzzed configs (many invalid, including enum values
// out of range), begin/append with right or wrong sizes, attend/attend_reference (compared with
// each other), read_key/read_value, add_scores/set_sink_heads, a SinkDetector fed from attention,
// save/restore round trips, moves, destruction, and pages allocated and released by hand.
//
// After every operation:
//  - pages are accounted exactly: pool pages_in_use == sum of the streams' stats().pages + pages
//    held by hand;
//  - every stream holds its invariants (fuzz_support.h);
//  - if the operation threw, the stream it was called on is unchanged (the API's promise).
// Only kvcache::Error may be thrown; anything else escapes and libFuzzer reports it as a crash.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "fuzz_support.h"
#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "kvcache/sink_detector.h"
#include "kvcache/stream_cache.h"

namespace {

using namespace kvcache;
using kvcache::fuzz::check_stream_invariants;
using kvcache::fuzz::stream_fingerprint;

constexpr int kMaxOps = 48;        // with the caps below, one input runs in about a millisecond
constexpr std::size_t kSlots = 4;  // streams alive at once

struct Slot {
  std::optional<StreamCache> cache;
  std::optional<SinkDetector> detector;  // when the config keeps enough token state for one
  std::uint32_t n_heads = 1;             // query heads the detector and attention use
};

struct World {
  std::shared_ptr<PagePool> pool;
  std::array<Slot, kSlots> slots;
  std::vector<PageId> by_hand;  // pages allocated directly from the pool
  std::minstd_rand rng{1};      // fills K/V/q: the input picks the seed, not every float

  std::size_t pages_held() const {
    std::size_t n = by_hand.size();
    for (const Slot& s : slots) {
      if (s.cache) n += s.cache->stats().pages;
    }
    return n;
  }
  void check() const {
    FUZZ_CHECK(pool->stats().pages_in_use == pages_held());
    for (const Slot& s : slots) {
      if (s.cache) check_stream_invariants(*s.cache);
    }
  }
  std::vector<float> values(std::size_t n) {
    std::uniform_real_distribution<float> u(-2.f, 2.f);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
  }
};

// A value from `choices` most of the time, an arbitrary one otherwise.
template <class T, std::size_t N>
T pick(FuzzedDataProvider& in, const T (&choices)[N]) {
  return in.PickValueInArray(choices);
}

StreamConfig fuzz_config(FuzzedDataProvider& in) {
  StreamConfig c;
  c.n_layers = pick(in, {0u, 1u, 1u, 2u, 3u});
  c.n_kv_heads = pick(in, {0u, 1u, 1u, 2u, 3u});
  c.head_dim = pick(in, {0u, 1u, 2u, 3u, 4u, 8u, 8u, 16u});
  c.page_tokens = pick(in, {0u, 1u, 2u, 3u, 4u, 4u, 8u, 16u, 70000u});
  // Enumerators are fuzzed as raw bytes now and then: a value outside the enum is a bad argument
  // the constructor must reject, not undefined behaviour deep inside.
  auto enum_byte = [&](std::uint8_t n_valid) {
    const auto b = in.ConsumeIntegral<std::uint8_t>();
    return b < 250 ? static_cast<std::uint8_t>(b % n_valid) : b;
  };
  // One byte for both dtypes, so seed programs keep their meaning: the window's is the byte mod 4,
  // the pinned region's (the byte / 4) mod 5, where 0 leaves it unset (= the window's).
  const std::uint8_t dtype_byte = enum_byte(4 * 5);
  c.dtype = static_cast<DType>(dtype_byte < 250 ? dtype_byte % 4 : dtype_byte);
  if (dtype_byte < 250 && dtype_byte / 4 % 5 != 0)
    c.pinned_dtype = static_cast<DType>(dtype_byte / 4 % 5 - 1);
  c.positions = static_cast<PositionMode>(enum_byte(2));
  c.rope.style = static_cast<RopeStyle>(enum_byte(3));
  c.rope.theta =
      pick(in, {10000.0, 10000.0, 500000.0, 1.0, 0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                std::numeric_limits<double>::infinity()});
  c.policy.kind = static_cast<PolicyKind>(enum_byte(5));
  c.policy.budget = pick(in, {0u, 1u, 2u, 3u, 5u, 8u, 12u, 24u, 0xffffffffu});
  c.policy.sinks = pick(in, {0u, 1u, 2u, 4u, 0xffffffffu});
  c.policy.hidden_sinks = pick(in, {0u, 1u, 2u, 4u, 0xffffffffu});
  c.policy.heavy = pick(in, {0u, 1u, 3u, 8u, 0xffffffffu});
  c.policy.min_sink_heads =
      pick(in, {std::uint16_t{0}, std::uint16_t{1}, std::uint16_t{2}, std::uint16_t{0xffff}});
  c.token_state_floats = pick(in, {0u, 1u, 7u, 30u});  // create() may size it for a detector
  return c;
}

// The fingerprints of every live stream, to check that a failed call changed none of them.
std::array<std::uint64_t, kSlots> fingerprints(const World& w) {
  std::array<std::uint64_t, kSlots> f{};
  for (std::size_t i = 0; i < kSlots; ++i) {
    if (w.slots[i].cache) f[i] = stream_fingerprint(*w.slots[i].cache);
  }
  return f;
}

// Sizes of a span argument: right most of the time, sometimes off by one or empty.
std::size_t fuzz_size(FuzzedDataProvider& in, std::size_t right) {
  switch (in.ConsumeIntegralInRange(0, 7)) {
    case 0:
      return 0;
    case 1:
      return right + 1;
    case 2:
      return right > 0 ? right - 1 : 1;
    default:
      return right;
  }
}

void op_attend(World& w, Slot& s, FuzzedDataProvider& in) {
  StreamCache& c = *s.cache;
  const StreamConfig& cfg = c.config();
  const std::uint32_t layer = in.ConsumeIntegralInRange<std::uint32_t>(0, cfg.n_layers);
  const std::uint32_t n_heads = in.ConsumeBool() ? s.n_heads : in.ConsumeIntegralInRange<std::uint32_t>(0, 7);
  const std::size_t q_size = std::size_t{n_heads} * cfg.head_dim;
  const std::vector<float> q = w.values(fuzz_size(in, q_size));
  std::vector<float> out(fuzz_size(in, q_size)), out_ref(out.size());
  const std::size_t mass_size = in.ConsumeBool() ? 0 : fuzz_size(in, std::size_t{n_heads} * c.n_kept());
  std::vector<float> mass(mass_size), mass_ref(mass_size);
  AttendOptions opt;
  opt.n_heads = n_heads;
  opt.scale = pick(in, {0.f, 0.f, 0.25f, 1.f, -1.f, std::numeric_limits<float>::quiet_NaN()});
  opt.query_index = in.ConsumeIntegralInRange<std::int64_t>(-3, std::int64_t{c.n_kept()} + 1);
  if (in.ConsumeBool()) opt.query_index = -1;
  bool ok = true;
  try {
    attend(c, layer, q, out, mass, opt);
  } catch (const InvalidArgument&) {
    ok = false;
  }
  bool ok_ref = true;
  try {
    attend_reference(c, layer, q, out_ref, mass_ref, opt);
  } catch (const InvalidArgument&) {
    ok_ref = false;
  }
  FUZZ_CHECK(ok == ok_ref);  // one validation for both
  if (!ok) return;
  // The kernel against its scalar twin; K/V/q are in [-2, 2], so both are well conditioned.
  for (std::size_t i = 0; i < out.size(); ++i) {
    FUZZ_CHECK(std::isfinite(out[i]));
    FUZZ_CHECK(std::fabs(out[i] - out_ref[i]) <= 1e-4f + 1e-3f * std::fabs(out_ref[i]));
  }
  const std::size_t n = c.n_kept();
  const std::size_t seen = opt.query_index < 0 ? n : static_cast<std::size_t>(opt.query_index) + 1;
  for (std::size_t h = 0; h < (mass.empty() ? 0 : n_heads); ++h) {
    double sum = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const float p = mass[h * n + j];
      FUZZ_CHECK(p >= 0.f && p <= 1.f + 1e-5f);
      FUZZ_CHECK(std::fabs(p - mass_ref[h * n + j]) <= 1e-4f);
      if (j >= seen) FUZZ_CHECK(p == 0.f);
      sum += p;
    }
    FUZZ_CHECK(std::fabs(sum - 1.0) < 1e-3);
  }
  if (mass.empty()) return;
  // Feed the attention back as a runtime would: the detector (which also adds scores), or the
  // summed mass directly (H2O's accumulated attention).
  if (s.detector && in.ConsumeBool()) {
    s.detector->observe(c, layer, mass);
  } else if (in.ConsumeBool()) {
    std::vector<float> per_token(n, 0.f);
    for (std::size_t h = 0; h < n_heads; ++h) {
      for (std::size_t j = 0; j < n; ++j) per_token[j] += mass[h * n + j];
    }
    c.add_scores(per_token);
  }
}

void op_append(World& w, Slot& s, FuzzedDataProvider& in, bool all_correct) {
  StreamCache& c = *s.cache;
  const StreamConfig& cfg = c.config();
  const std::size_t right = std::size_t{c.n_pending()} * cfg.n_kv_heads * cfg.head_dim;
  if (all_correct) {
    for (std::uint32_t il = 0; il < cfg.n_layers; ++il) {
      if (!c.layer_ready(il)) c.append(il, w.values(right), w.values(right));
    }
    return;
  }
  const std::uint32_t layer = in.ConsumeIntegralInRange<std::uint32_t>(0, cfg.n_layers);
  const std::size_t nk = fuzz_size(in, right), nv = in.ConsumeBool() ? nk : fuzz_size(in, right);
  c.append(layer, w.values(nk), w.values(nv));
}

void op_read(Slot& s, FuzzedDataProvider& in) {
  const StreamCache& c = *s.cache;
  const StreamConfig& cfg = c.config();
  const auto layer = in.ConsumeIntegralInRange<std::uint32_t>(0, cfg.n_layers);
  const auto index = in.ConsumeIntegralInRange<std::uint32_t>(0, c.n_kept());
  const auto head = in.ConsumeIntegralInRange<std::uint32_t>(0, cfg.n_kv_heads);
  std::vector<float> row(fuzz_size(in, cfg.head_dim));
  if (in.ConsumeBool()) {
    c.read_key(layer, index, head, row);
  } else {
    c.read_value(layer, index, head, row);
  }
  // Rows of pending tokens in a layer not yet appended hold whatever the page held before
  // (read_key/read_value do not check layer_ready); only appended rows are known finite.
  if (c.layer_ready(layer)) {
    for (float x : row) FUZZ_CHECK(std::isfinite(x));
  }
}

void op_spans(Slot& s, FuzzedDataProvider& in) {
  const StreamCache& c = *s.cache;
  std::vector<KvSpan> spans;
  c.layer_spans(in.ConsumeIntegralInRange<std::uint32_t>(0, c.config().n_layers), spans);
  // Spans tile [0, n_kept) in order, each inside one page: pinned spans first, in the pinned
  // region's layout (its pages hold another number of tokens when pinned_dtype differs), then
  // the window's.
  const StreamConfig& cfg = c.config();
  const PageLayout pinned = cfg.pinned_layout(), window = cfg.layout();
  const std::uint32_t n_pinned = c.n_pinned();
  std::uint32_t next = 0;
  for (const KvSpan& sp : spans) {
    FUZZ_CHECK(sp.page != nullptr && sp.n > 0 && sp.kept_begin == next);
    const PageLayout& want = sp.kept_begin < n_pinned ? pinned : window;
    FUZZ_CHECK(sp.layout.page_tokens == want.page_tokens && sp.layout.dtype == want.dtype);
    FUZZ_CHECK(std::uint64_t{sp.slot_begin} + sp.n <= sp.layout.page_tokens);
    FUZZ_CHECK(sp.kept_begin >= n_pinned || sp.kept_begin + sp.n <= n_pinned);  // never straddles
    next += sp.n;
  }
  FUZZ_CHECK(next == c.n_kept());
}

// Saves slot `a` and restores the file into slot `b` (maybe the same stream, maybe one with
// another config, which must be rejected).
void op_round_trip(World& w, std::size_t a, std::size_t b) {
  const std::filesystem::path path = kvcache::fuzz::scratch_dir() / "api_snapshot";
  StreamCache& src = *w.slots[a].cache;
  src.save(path);  // throws InvalidArgument with pending tokens: checked by the caller
  const std::uint64_t saved = stream_fingerprint(src, true);
  StreamCache& dst = *w.slots[b].cache;
  try {
    dst.restore(path);
  } catch (const PoolExhausted&) {
    throw;  // the pool is shared and small: fine, and dst must be unchanged (checked by the caller)
  } catch (const FormatError&) {
    // Only a config mismatch may reject a snapshot the library just wrote.
    const StreamConfig &x = src.config(), &y = dst.config();
    FUZZ_CHECK(x.n_layers != y.n_layers || x.n_kv_heads != y.n_kv_heads || x.head_dim != y.head_dim ||
               x.page_tokens != y.page_tokens || x.dtype != y.dtype || x.positions != y.positions ||
               x.rope.style != y.rope.style || x.rope.theta != y.rope.theta ||
               x.policy.kind != y.policy.kind || x.policy.budget != y.policy.budget ||
               x.policy.sinks != y.policy.sinks || x.policy.hidden_sinks != y.policy.hidden_sinks ||
               x.policy.heavy != y.policy.heavy || x.policy.min_sink_heads != y.policy.min_sink_heads ||
               x.token_state_floats != y.token_state_floats || x.pinned() != y.pinned());
    throw;
  }
  FUZZ_CHECK(stream_fingerprint(dst, true) == saved);
}

// Creates a stream in slot `s` (replacing what it held: those pages go back to the pool).
void op_create(World& w, Slot& s, FuzzedDataProvider& in) {
  StreamConfig cfg = fuzz_config(in);
  const std::uint32_t n_heads = cfg.n_kv_heads * in.ConsumeIntegralInRange<std::uint32_t>(1, 2);
  const bool detect = in.ConsumeBool();
  if (detect) cfg.token_state_floats = cfg.n_layers * n_heads + cfg.n_layers;  // what a detector needs
  SinkDetectorOptions dopt;
  dopt.alpha = pick(in, {5.f, 5.f, 2.f, 1.f, 0.5f, std::numeric_limits<float>::infinity()});
  dopt.decay = pick(in, {0.9f, 0.9f, 0.5f, 0.f, 1.f, 0.9999f});
  s.cache.reset();
  s.detector.reset();
  s.cache.emplace(w.pool, cfg);
  s.n_heads = n_heads;
  if (detect) {
    try {
      s.detector.emplace(cfg.n_layers, n_heads, dopt);
    } catch (const InvalidArgument&) {
    }
  }
}

// Moves slot `s` into slot `d`; the moved-from stream must refuse use cleanly.
void op_move(Slot& s, Slot& d) {
  d.cache = std::move(*s.cache);  // d's old stream, if any, releases its pages
  d.detector = s.detector;
  d.n_heads = s.n_heads;
  FUZZ_CHECK(s.cache->n_kept() == 0 && s.cache->stats().pages == 0);
  const std::int32_t id = 1;
  bool refused = false;
  try {
    s.cache->begin(std::span(&id, 1));
  } catch (const InvalidArgument&) {
    refused = true;
  }
  FUZZ_CHECK(refused);
  s.cache.reset();
  s.detector.reset();
}

// Allocates or releases pages by hand, beside the streams; bad releases must be refused.
void op_pages(World& w, FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0:
      w.by_hand.push_back(w.pool->allocate());
      return;
    case 1:
      if (const auto id = w.pool->try_allocate()) w.by_hand.push_back(*id);
      return;
    case 2:
      if (!w.by_hand.empty()) {
        const std::size_t i = in.ConsumeIntegralInRange<std::size_t>(0, w.by_hand.size() - 1);
        const PageId id = w.by_hand[i];
        w.pool->release(id);  // never throws for a page in use; if it did, by_hand stays right
        w.by_hand.erase(w.by_hand.begin() + static_cast<std::ptrdiff_t>(i));
      }
      return;
    default: {
      // A page nobody holds: free or unknown. Skip ids that may belong to a hand or a stream
      // (the pool cannot tell a stream's page from a hand-held one; releasing it would be a
      // caller bug the pool is not asked to catch).
      const PageId id = in.ConsumeIntegralInRange<PageId>(0, 80);
      const auto st = w.pool->stats();
      if (std::find(w.by_hand.begin(), w.by_hand.end(), id) != w.by_hand.end()) return;
      if (id < st.pages_reserved && st.pages_in_use != w.by_hand.size()) return;
      bool refused = false;
      try {
        w.pool->release(id);
      } catch (const InvalidArgument&) {
        refused = true;
      }
      FUZZ_CHECK(refused);
      return;
    }
  }
}

// One operation on slot `si`. Returns false for operations that replace or remove streams (no
// "unchanged on failure" check applies to those).
bool do_op(World& w, int op, std::size_t si, FuzzedDataProvider& in) {
  Slot& s = w.slots[si];
  if (op == 0) {
    op_create(w, s, in);
    return false;
  }
  if (op == 13 || op == 14) {
    op_pages(w, in);
    return true;
  }
  if (!s.cache) return true;
  StreamCache& c = *s.cache;
  switch (op) {
    case 1:
      s.cache.reset();
      s.detector.reset();
      return false;
    case 2: {
      std::vector<std::int32_t> ids(in.ConsumeIntegralInRange<std::size_t>(0, 6));
      for (std::int32_t& id : ids) id = in.ConsumeIntegral<std::int32_t>();
      c.begin(ids);
      return true;
    }
    case 3:
      op_append(w, s, in, false);
      return true;
    case 4:
      op_append(w, s, in, true);
      return true;
    case 5:
      op_attend(w, s, in);
      return true;
    case 6:
      op_read(s, in);
      return true;
    case 7: {
      std::vector<float> m = w.values(fuzz_size(in, c.n_kept()));
      for (float& x : m) x = std::fabs(x) * 0.25f;  // attention mass is a probability
      c.add_scores(m);
      return true;
    }
    case 8: {
      std::vector<std::uint16_t> heads(fuzz_size(in, c.n_kept()));
      for (std::uint16_t& h : heads) {
        h = pick(in, {std::uint16_t{0}, std::uint16_t{1}, std::uint16_t{3}, std::uint16_t{0xffff}});
      }
      c.set_sink_heads(heads);
      return true;
    }
    case 9: {
      const std::size_t bi = in.ConsumeIntegralInRange<std::size_t>(0, kSlots - 1);
      if (w.slots[bi].cache) op_round_trip(w, si, bi);
      return true;
    }
    case 10: {
      const auto index = in.ConsumeIntegralInRange<std::uint32_t>(0, c.n_kept());
      const StreamCache::Observed o = c.observed(index);
      FUZZ_CHECK(o.state.size() == c.config().token_state_floats && o.pos >= 0);
      return true;
    }
    case 11:
      op_spans(s, in);
      return true;
    case 12: {
      const std::size_t bi = in.ConsumeIntegralInRange<std::size_t>(0, kSlots - 1);
      if (bi != si) op_move(s, w.slots[bi]);
      return false;
    }
    case 15:
      if (s.detector) {
        (void)s.detector->is_sink(c, in.ConsumeIntegralInRange<std::uint32_t>(0, c.n_kept()),
                                  in.ConsumeIntegralInRange<std::uint32_t>(0, c.config().n_layers),
                                  in.ConsumeIntegralInRange<std::uint32_t>(0, s.n_heads));
      }
      return true;
    default:
      return true;
  }
}

void run(FuzzedDataProvider& in) {
  World w;
  PagePoolOptions po;
  po.page_bytes = pick(in, {0ul, 64ul, 256ul, 1024ul, 4096ul, 16384ul, 100ul});
  po.max_bytes = po.page_bytes * in.ConsumeIntegralInRange<std::size_t>(0, 64);
  po.arena_bytes = pick(in, {std::size_t{4} << 20, 0ul, 4096ul, 65536ul});
  try {
    w.pool = std::make_shared<PagePool>(po);
  } catch (const InvalidArgument&) {
    return;
  }
  w.rng.seed(in.ConsumeIntegral<std::uint32_t>());

  for (int n_ops = 0; n_ops < kMaxOps && in.remaining_bytes() > 0; ++n_ops) {
    const int op = in.ConsumeIntegralInRange(0, 15);
    const std::size_t si = in.ConsumeIntegralInRange<std::size_t>(0, kSlots - 1);
    const auto before = fingerprints(w);
    const std::size_t pages_before = w.pool->stats().pages_in_use;
    bool threw = false, check_unchanged = true;
    try {
      check_unchanged = do_op(w, op, si, in);
    } catch (const Error&) {
      threw = true;
      check_unchanged = op != 0 && op != 1 && op != 12;
    }
    if (threw && check_unchanged) {
      // A failed call changes nothing: not the streams, not the pool.
      FUZZ_CHECK(fingerprints(w) == before);
      FUZZ_CHECK(w.pool->stats().pages_in_use == pages_before);
    }
    w.check();
  }
  for (Slot& s : w.slots) s.cache.reset();
  for (PageId id : w.by_hand) w.pool->release(id);
  FUZZ_CHECK(w.pool->stats().pages_in_use == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;
  FuzzedDataProvider in(data, size);
  run(in);
  return 0;
}
