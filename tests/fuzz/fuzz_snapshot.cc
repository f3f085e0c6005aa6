// Fuzzes StreamCache::restore (kvcache/stream/stream_snapshot.cc) with mutated snapshots.
//
// The snapshot ends in an FNV-1a-64 checksum of every byte before it; the target recomputes and
// patches it into the input, otherwise nearly every mutation would stop at the checksum test.
// The stream's configuration is read from the snapshot's own header (bounded to keep a run
// short), so mutations of the config fields reach both the config check and the parser. The
// stream is pre-filled with a few tokens first, because a failed restore must leave it unchanged.
//
// After a successful restore the stream must hold its invariants, match the pool's page count,
// survive a save/restore round trip unchanged, and keep working: begin/append/attend and a
// SinkDetector fed from attention, for a few steps.
#include <cmath>
#include <cstring>
#include <optional>

#include "fuzz_support.h"
#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "kvcache/sink_detector.h"
#include "kvcache/stream_cache.h"

namespace {

using namespace kvcache;
using kvcache::fuzz::check_stream_invariants;

template <class T>
T load_at(const std::vector<std::uint8_t>& d, std::size_t off) {
  T v;
  std::memcpy(&v, d.data() + off, sizeof v);
  return v;
}

// The config as it sits at offset 16 of the snapshot (see stream_snapshot.cc), if the input is
// long enough and the sizes small enough to keep a run in milliseconds.
std::optional<StreamConfig> header_config(const std::vector<std::uint8_t>& d) {
  if (d.size() < 67) return std::nullopt;
  StreamConfig c;
  c.n_layers = load_at<std::uint32_t>(d, 16);
  c.n_kv_heads = load_at<std::uint32_t>(d, 20);
  c.head_dim = load_at<std::uint32_t>(d, 24);
  c.page_tokens = load_at<std::uint32_t>(d, 28);
  c.dtype = static_cast<DType>(d[32] % 4);             // the enums' valid values only: this target is
  c.positions = static_cast<PositionMode>(d[33] % 2);  // about the file, fuzz_api about configs
  c.rope.style = static_cast<RopeStyle>(d[34] % 3);
  c.policy.kind = static_cast<PolicyKind>(d[35] % 5);
  c.rope.theta = load_at<double>(d, 36);
  c.policy.budget = load_at<std::uint32_t>(d, 44);
  c.policy.sinks = load_at<std::uint32_t>(d, 48);
  c.policy.hidden_sinks = load_at<std::uint32_t>(d, 52);
  c.policy.heavy = load_at<std::uint32_t>(d, 56);
  c.policy.min_sink_heads = load_at<std::uint16_t>(d, 60);
  c.token_state_floats = load_at<std::uint32_t>(d, 62);
  c.pinned_dtype = static_cast<DType>(d[66] % 4);
  if (c.n_layers > 4 || c.n_kv_heads > 4 || c.head_dim > 64 || c.page_tokens > 64 ||
      c.token_state_floats > 64) {
    return std::nullopt;
  }
  return c;
}

StreamConfig default_config() {
  StreamConfig c;
  c.n_layers = 2;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.page_tokens = 4;
  c.policy = PolicyConfig::hidden(2, 2, 12, 1);
  c.token_state_floats = 2 * 4 + 2;  // a SinkDetector over 2 layers x 4 query heads
  return c;
}

// One decode step with small finite K/V/q; returns false when the pool is exhausted.
bool step(StreamCache& cache, std::int32_t token, float seed) {
  const StreamConfig& c = cache.config();
  try {
    cache.begin(std::span(&token, 1));
  } catch (const PoolExhausted&) {
    return false;
  }
  std::vector<float> k(std::size_t{c.n_kv_heads} * c.head_dim), v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(seed + static_cast<float>(i));
    v[i] = std::cos(seed * 0.5f + static_cast<float>(i));
  }
  for (std::uint32_t il = 0; il < c.n_layers; ++il) cache.append(il, k, v);
  return true;
}

// Whether every K/V row is finite and moderate, so attention results can be checked exactly
// (restored rows are arbitrary bytes: NaN, inf and 1e38 are all legal data).
bool rows_tame(const StreamCache& cache) {
  const StreamConfig& c = cache.config();
  std::vector<float> row(c.head_dim);
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    for (std::uint32_t i = 0; i < cache.n_kept(); ++i) {
      for (std::uint32_t h = 0; h < c.n_kv_heads; ++h) {
        cache.read_key(il, i, h, row);
        for (float x : row)
          if (!(std::fabs(x) < 1e4f)) return false;
        cache.read_value(il, i, h, row);
        for (float x : row)
          if (!(std::fabs(x) < 1e4f)) return false;
      }
    }
  }
  return true;
}

void use_restored(StreamCache& cache, PagePool& pool) {
  const StreamConfig& c = cache.config();
  const std::uint32_t n_heads = c.n_kv_heads * 2;
  std::optional<SinkDetector> detector;
  if (c.n_layers * n_heads <= 0xffff && c.token_state_floats >= c.n_layers * n_heads + c.n_layers) {
    detector.emplace(c.n_layers, n_heads);
  }
  std::vector<float> q(std::size_t{n_heads} * c.head_dim), out(q.size()), mass;
  for (int t = 0; t < 3; ++t) {
    if (!step(cache, 7 + t, static_cast<float>(t))) return;
    check_stream_invariants(cache);
    FUZZ_CHECK(pool.stats().pages_in_use == cache.stats().pages);
    const bool tame = rows_tame(cache);
    mass.assign(std::size_t{n_heads} * cache.n_kept(), 0.f);
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::cos(static_cast<float>(i + t));
    for (std::uint32_t il = 0; il < c.n_layers; ++il) {
      attend(cache, il, q, out, mass, {n_heads, 0.f, -1});
      if (tame) {
        for (float x : out) FUZZ_CHECK(std::isfinite(x));
        for (std::uint32_t h = 0; h < n_heads; ++h) {
          double sum = 0;
          for (std::uint32_t j = 0; j < cache.n_kept(); ++j) sum += mass[std::size_t{h} * cache.n_kept() + j];
          FUZZ_CHECK(std::fabs(sum - 1.0) < 1e-3);
        }
      }
      if (detector) detector->observe(cache, il, mass);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (std::size_t{1} << 18)) return 0;
  std::vector<std::uint8_t> snap(data, data + size);
  kvcache::fuzz::patch_snapshot_checksum(snap);
  static kvcache::fuzz::MemFile file;
  file.write(snap);

  // The stream takes the snapshot's own config when that is a valid one; otherwise a default
  // config, against which the snapshot is rejected (reaching the header and config checks).
  std::shared_ptr<PagePool> pool;
  std::optional<StreamCache> cache;
  if (const std::optional<StreamConfig> c = header_config(snap)) {
    try {
      const std::size_t page_bytes = c->layout().page_bytes();
      // A 1 MiB budget: a restore needing more pages must fail with PoolExhausted, unchanged.
      pool =
          std::make_shared<PagePool>(PagePoolOptions{page_bytes, std::max<std::size_t>(page_bytes, 1 << 20)});
      cache.emplace(pool, *c);
    } catch (const Error&) {
      cache.reset();
    }
  }
  if (!cache) {
    pool = std::make_shared<PagePool>(PagePoolOptions{4096, 1 << 20});
    cache.emplace(pool, default_config());
  }
  for (int t = 0; t < 3; ++t) step(*cache, 100 + t, 0.25f * static_cast<float>(t));
  const std::uint64_t before = kvcache::fuzz::stream_fingerprint(*cache);
  try {
    cache->restore(file.path());
  } catch (const Error& e) {
    // KVCACHE_FUZZ_VERBOSE=1 shows why inputs are rejected (to check that seeds get through).
    if (std::getenv("KVCACHE_FUZZ_VERBOSE") != nullptr) std::fprintf(stderr, "rejected: %s\n", e.what());
    FUZZ_CHECK(kvcache::fuzz::stream_fingerprint(*cache) == before);
    FUZZ_CHECK(pool->stats().pages_in_use == cache->stats().pages);
    return 0;
  }
  check_stream_invariants(*cache);
  FUZZ_CHECK(pool->stats().pages_in_use == cache->stats().pages);

  // Round trip: the restored stream saves and restores to an identical stream.
  const std::filesystem::path again = kvcache::fuzz::scratch_dir() / "snapshot";
  cache->save(again);
  {
    StreamCache twin(pool, cache->config());
    try {
      twin.restore(again);
      FUZZ_CHECK(kvcache::fuzz::stream_fingerprint(twin, true) ==
                 kvcache::fuzz::stream_fingerprint(*cache, true));
      FUZZ_CHECK(pool->stats().pages_in_use == cache->stats().pages + twin.stats().pages);
    } catch (const PoolExhausted&) {
    }
  }

  use_restored(*cache, *pool);
  cache.reset();
  FUZZ_CHECK(pool->stats().pages_in_use == 0);
  return 0;
}
