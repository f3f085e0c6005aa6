// The C API (include/kvcache/kvcache.h): thin wrappers over the C++ API.
//
// Every entry point runs its body inside guarded(), which maps each exception to a kvc_status and
// records the message in a per-thread buffer, so no exception crosses into C. Arguments the C++
// API cannot see (NULL pointers, buffer lengths, enum values) are checked here, before the C++
// call, so a failure leaves the stream untouched exactly as the C++ API's own checks do.
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "kvcache/kvcache.h"
#include "kvcache/page_layout.h"
#include "kvcache/page_pool.h"
#include "kvcache/sink_detector.h"
#include "kvcache/stream_cache.h"

// The handle types are declared (incomplete) at global scope by the C header, so they are
// defined there too. They hold only C++ objects; the C side sees pointers.
struct kvc_pool {
  std::shared_ptr<kvcache::PagePool> pool;  // shared with every stream created from it
};

struct kvc_stream {
  kvc_stream(std::shared_ptr<kvcache::PagePool> p, const kvcache::StreamConfig& c,
             std::optional<kvcache::SinkDetector> d, std::uint32_t d_heads)
      : pool(p), cache(std::move(p), c), detector(std::move(d)), detector_heads(d_heads) {}

  std::shared_ptr<kvcache::PagePool> pool;        // kept to rebuild `cache` in kvc_stream_reset
  kvcache::StreamCache cache;                     // the stream; owns its pages
  std::optional<kvcache::SinkDetector> detector;  // present when config.detector was set
  std::uint32_t detector_heads;                   // query heads the detector expects (0 without one)
  std::vector<float> mass;      // scratch: attention mass when OBSERVE is asked without a buffer
  std::vector<float> head_sum;  // scratch: mass summed over heads (scores without a detector)
};

namespace {

using kvcache::InvalidArgument;

// Per-thread message of the last call. A fixed buffer, not std::string: recording an error must
// not allocate, since one of the errors it records is running out of memory.
thread_local char t_error[1024] = "";

kvc_status fail(kvc_status status, const char* fn, const char* what) noexcept {
  std::snprintf(t_error, sizeof t_error, "%s: %s", fn, what);
  return status;
}

// Runs `body`, translating every exception into a status. The most specific kvcache types come
// first; anything unexpected is KVC_INTERNAL, never a crash or an exception across the C ABI.
template <class F>
kvc_status guarded(const char* fn, F&& body) noexcept {
  try {
    body();
    t_error[0] = '\0';
    return KVC_OK;
  } catch (const kvcache::PoolExhausted& e) {
    return fail(KVC_POOL_EXHAUSTED, fn, e.what());
  } catch (const kvcache::InvalidArgument& e) {
    return fail(KVC_INVALID_ARGUMENT, fn, e.what());
  } catch (const kvcache::FormatError& e) {
    return fail(KVC_FORMAT_ERROR, fn, e.what());
  } catch (const std::bad_alloc&) {
    return fail(KVC_OUT_OF_MEMORY, fn, "out of memory");
  } catch (const std::exception& e) {
    return fail(KVC_INTERNAL, fn, e.what());
  } catch (...) {
    return fail(KVC_INTERNAL, fn, "unknown exception");
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw InvalidArgument(what);
}

// The integer a C enum object holds. C code may store any int in an enum field; reading an
// out-of-range value as the C++ enum type is undefined behaviour (clang's -fsanitize=enum flags
// it), so the bytes are copied into an int and range-checked before any conversion.
template <class E>
int enum_value(const E& e) noexcept {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized on supported compilers");
  int v = 0;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

kvcache::DType to_dtype(const kvc_dtype& d) {
  const int v = enum_value(d);
  if (v == KVC_DTYPE_F32) return kvcache::DType::f32;
  if (v == KVC_DTYPE_F16) return kvcache::DType::f16;
  if (v == KVC_DTYPE_Q8) return kvcache::DType::q8;
  if (v == KVC_DTYPE_Q4) return kvcache::DType::q4;
  throw InvalidArgument("dtype " + std::to_string(v) + " is not a kvc_dtype");
}

kvcache::StreamConfig to_stream_config(const kvc_stream_config& c) {
  kvcache::StreamConfig s;
  s.n_layers = c.n_layers;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_dim;
  s.page_tokens = c.page_tokens;
  s.dtype = to_dtype(c.dtype);
  if (enum_value(c.pinned_dtype) != KVC_DTYPE_SAME) {
    try {
      s.pinned_dtype = to_dtype(c.pinned_dtype);
    } catch (const InvalidArgument&) {
      throw InvalidArgument("pinned_dtype " + std::to_string(enum_value(c.pinned_dtype)) +
                            " is not a kvc_dtype");
    }
  }
  switch (enum_value(c.positions)) {
    case KVC_POSITIONS_REINDEXED:
      s.positions = kvcache::PositionMode::reindexed;
      break;
    case KVC_POSITIONS_ABSOLUTE:
      s.positions = kvcache::PositionMode::absolute;
      break;
    default:
      throw InvalidArgument("positions " + std::to_string(enum_value(c.positions)) +
                            " is not a kvc_position_mode");
  }
  switch (enum_value(c.rope_style)) {
    case KVC_ROPE_NONE:
      s.rope.style = kvcache::RopeStyle::none;
      break;
    case KVC_ROPE_ADJACENT_PAIRS:
      s.rope.style = kvcache::RopeStyle::adjacent_pairs;
      break;
    case KVC_ROPE_HALF_SPLIT:
      s.rope.style = kvcache::RopeStyle::half_split;
      break;
    default:
      throw InvalidArgument("rope_style " + std::to_string(enum_value(c.rope_style)) +
                            " is not a kvc_rope_style");
  }
  s.rope.theta = c.rope_theta;
  switch (enum_value(c.policy)) {
    case KVC_POLICY_FULL:
      s.policy.kind = kvcache::PolicyKind::full;
      break;
    case KVC_POLICY_WINDOW:
      s.policy.kind = kvcache::PolicyKind::window;
      break;
    case KVC_POLICY_SINKS:
      s.policy.kind = kvcache::PolicyKind::sinks;
      break;
    case KVC_POLICY_HIDDEN_SINKS:
      s.policy.kind = kvcache::PolicyKind::hidden_sinks;
      break;
    case KVC_POLICY_H2O:
      s.policy.kind = kvcache::PolicyKind::h2o;
      break;
    default:
      throw InvalidArgument("policy " + std::to_string(enum_value(c.policy)) + " is not a kvc_policy_kind");
  }
  s.policy.budget = c.budget;
  s.policy.sinks = c.sinks;
  s.policy.hidden_sinks = c.hidden_sinks;
  s.policy.heavy = c.heavy;
  s.policy.min_sink_heads = c.min_sink_heads;
  return s;
}

// Feeds one query's attention mass (n_heads x n_kept) back: to the detector when the stream has
// one (it also accumulates scores), else to the token scores summed over heads. Call only after
// check_observe() passed for the same sizes.
void feed_mass(kvc_stream& s, std::uint32_t layer, std::uint32_t n_heads, std::span<const float> mass) {
  if (s.detector) {
    s.detector->observe(s.cache, layer, mass);
    return;
  }
  const std::size_t n = s.cache.n_kept();
  s.head_sum.assign(n, 0.f);
  for (std::size_t h = 0; h < n_heads; ++h) {
    for (std::size_t j = 0; j < n; ++j) s.head_sum[j] += mass[h * n + j];
  }
  s.cache.add_scores(s.head_sum);
}

// Checks what feed_mass() needs, so a call fails before anything is written.
void check_observe(const kvc_stream& s, std::uint32_t layer, std::uint32_t n_heads) {
  if (layer >= s.cache.config().n_layers) {
    throw InvalidArgument("layer " + std::to_string(layer) + " out of range (n_layers " +
                          std::to_string(s.cache.config().n_layers) + ")");
  }
  require(n_heads > 0, "n_heads must be > 0");
  if (s.detector && n_heads != s.detector_heads) {
    throw InvalidArgument("n_heads " + std::to_string(n_heads) + " differs from the detector's " +
                          std::to_string(s.detector_heads) + " (config n_heads; 0 means n_kv_heads)");
  }
}

}  // namespace

extern "C" {

const char* kvc_last_error(void) { return t_error; }

const char* kvc_status_name(kvc_status status) {
  switch (enum_value(status)) {
    case KVC_OK:
      return "KVC_OK";
    case KVC_INVALID_ARGUMENT:
      return "KVC_INVALID_ARGUMENT";
    case KVC_POOL_EXHAUSTED:
      return "KVC_POOL_EXHAUSTED";
    case KVC_FORMAT_ERROR:
      return "KVC_FORMAT_ERROR";
    case KVC_OUT_OF_MEMORY:
      return "KVC_OUT_OF_MEMORY";
    case KVC_INTERNAL:
      return "KVC_INTERNAL";
    default:
      return "KVC_UNKNOWN";
  }
}

uint32_t kvc_version(void) {
  return KVC_VERSION_MAJOR * 10000u + KVC_VERSION_MINOR * 100u + KVC_VERSION_PATCH;
}

const char* kvc_version_string(void) {
#define KVC_STR2(x) #x
#define KVC_STR(x) KVC_STR2(x)
  return KVC_STR(KVC_VERSION_MAJOR) "." KVC_STR(KVC_VERSION_MINOR) "." KVC_STR(KVC_VERSION_PATCH);
#undef KVC_STR
#undef KVC_STR2
}

kvc_status kvc_page_bytes(uint32_t page_tokens, uint32_t n_kv_heads, uint32_t head_dim, kvc_dtype dtype,
                          size_t* out) {
  return guarded("kvc_page_bytes", [&] {
    require(out != nullptr, "out is NULL");
    const kvcache::PageLayout layout{page_tokens, n_kv_heads, head_dim, to_dtype(dtype)};
    layout.validate();
    *out = layout.page_bytes();
  });
}

kvc_status kvc_pool_create(size_t page_bytes, size_t max_bytes, kvc_pool** out) {
  if (out != nullptr) *out = nullptr;
  return guarded("kvc_pool_create", [&] {
    require(out != nullptr, "out is NULL");
    kvcache::PagePoolOptions options;
    options.page_bytes = page_bytes;
    options.max_bytes = max_bytes;
    auto handle = std::make_unique<kvc_pool>();
    handle->pool = std::make_shared<kvcache::PagePool>(options);
    // An opaque C handle must be a raw pointer: ownership passes to the caller here and comes back
    // into a unique_ptr in kvc_pool_destroy. Nothing can throw after the release.
    *out = handle.release();
  });
}

void kvc_pool_destroy(kvc_pool* pool) {
  // Re-adopt the pointer released by kvc_pool_create; streams may still share the PagePool.
  const std::unique_ptr<kvc_pool> owned(pool);
}

kvc_status kvc_pool_stats_get(const kvc_pool* pool, kvc_pool_stats* out) {
  return guarded("kvc_pool_stats_get", [&] {
    require(pool != nullptr, "pool is NULL");
    require(out != nullptr, "out is NULL");
    const kvcache::PagePoolStats st = pool->pool->stats();
    *out = kvc_pool_stats{st.page_bytes, st.pages_max,         st.pages_reserved, st.pages_in_use,
                          st.pages_free, st.pages_high_water,  st.bytes_reserved, st.bytes_in_use,
                          st.arenas,     st.failed_allocations};
  });
}

void kvc_stream_config_init(kvc_stream_config* config) {
  if (config == nullptr) return;
  // Defaults come from the C++ structs so the two APIs cannot drift apart.
  const kvcache::StreamConfig cpp;
  const kvcache::SinkDetectorOptions det;
  *config = kvc_stream_config{};
  config->page_tokens = cpp.page_tokens;
  config->dtype = KVC_DTYPE_F32;
  config->positions = KVC_POSITIONS_REINDEXED;
  config->rope_style = KVC_ROPE_ADJACENT_PAIRS;
  config->rope_theta = cpp.rope.theta;
  config->policy = KVC_POLICY_FULL;
  config->budget = cpp.policy.budget;
  config->sinks = cpp.policy.sinks;
  config->hidden_sinks = cpp.policy.hidden_sinks;
  config->heavy = cpp.policy.heavy;
  config->min_sink_heads = cpp.policy.min_sink_heads;
  config->detector = 0;
  config->detector_alpha = det.alpha;
  config->detector_decay = det.decay;
  config->pinned_dtype = KVC_DTYPE_SAME;
}

kvc_status kvc_stream_create(kvc_pool* pool, const kvc_stream_config* config, kvc_stream** out) {
  if (out != nullptr) *out = nullptr;
  return guarded("kvc_stream_create", [&] {
    require(out != nullptr, "out is NULL");
    require(pool != nullptr, "pool is NULL");
    require(config != nullptr, "config is NULL");
    kvcache::StreamConfig cpp = to_stream_config(*config);
    std::optional<kvcache::SinkDetector> detector;
    std::uint32_t detector_heads = 0;
    if (config->detector != 0) {
      const std::uint32_t n_heads = config->n_heads == 0 ? config->n_kv_heads : config->n_heads;
      if (config->n_kv_heads != 0 && n_heads % config->n_kv_heads != 0) {
        throw InvalidArgument("n_heads (" + std::to_string(n_heads) + ") must be a multiple of n_kv_heads (" +
                              std::to_string(config->n_kv_heads) + ")");
      }
      detector.emplace(config->n_layers, n_heads,
                       kvcache::SinkDetectorOptions{config->detector_alpha, config->detector_decay});
      cpp.token_state_floats = detector->state_floats();
      detector_heads = n_heads;
    }
    auto handle = std::make_unique<kvc_stream>(pool->pool, cpp, detector, detector_heads);
    // Raw pointer for the opaque C handle; kvc_stream_destroy re-adopts it (see kvc_pool_create).
    *out = handle.release();
  });
}

void kvc_stream_destroy(kvc_stream* stream) {
  // Re-adopt the pointer released by kvc_stream_create; the cache returns its pages on destruction.
  const std::unique_ptr<kvc_stream> owned(stream);
}

kvc_status kvc_stream_begin(kvc_stream* stream, const int32_t* token_ids, size_t n) {
  return guarded("kvc_stream_begin", [&] {
    require(stream != nullptr, "stream is NULL");
    require(token_ids != nullptr, "token_ids is NULL");
    stream->cache.begin({token_ids, n});
  });
}

kvc_status kvc_stream_append(kvc_stream* stream, uint32_t layer, const float* k, const float* v,
                             size_t n_floats) {
  return guarded("kvc_stream_append", [&] {
    require(stream != nullptr, "stream is NULL");
    require(k != nullptr && v != nullptr, "k or v is NULL");
    stream->cache.append(layer, {k, n_floats}, {v, n_floats});
  });
}

void kvc_attend_options_init(kvc_attend_options* options) {
  if (options == nullptr) return;
  *options = kvc_attend_options{0.f, -1, 0u};
}

kvc_status kvc_stream_attend(kvc_stream* stream, uint32_t layer, uint32_t n_heads, const float* q,
                             size_t q_floats, float* out, size_t out_floats, float* mass, size_t mass_floats,
                             const kvc_attend_options* options) {
  return guarded("kvc_stream_attend", [&] {
    require(stream != nullptr, "stream is NULL");
    require(q != nullptr && out != nullptr, "q or out is NULL");
    require(mass != nullptr || mass_floats == 0, "mass is NULL but mass_floats is not 0");
    kvc_attend_options opt;
    kvc_attend_options_init(&opt);
    if (options != nullptr) opt = *options;
    require((opt.flags & ~(KVC_ATTEND_OBSERVE | KVC_ATTEND_REFERENCE)) == 0,
            "unknown bits in options->flags");
    const bool observe = (opt.flags & KVC_ATTEND_OBSERVE) != 0;

    std::span<float> mass_out(mass, mass_floats);
    if (observe) {
      check_observe(*stream, layer, n_heads);
      if (mass == nullptr) {
        // Sized before attention runs, so the only allocation that can fail comes first.
        stream->mass.resize(std::size_t{n_heads} * stream->cache.n_kept());
        mass_out = stream->mass;
      }
      if (!stream->detector) stream->head_sum.reserve(stream->cache.n_kept());
    }
    const kvcache::AttendOptions cpp{n_heads, opt.scale, opt.query_index};
    if ((opt.flags & KVC_ATTEND_REFERENCE) != 0) {
      kvcache::attend_reference(stream->cache, layer, {q, q_floats}, {out, out_floats}, mass_out, cpp);
    } else {
      kvcache::attend(stream->cache, layer, {q, q_floats}, {out, out_floats}, mass_out, cpp);
    }
    if (observe) feed_mass(*stream, layer, n_heads, mass_out);
  });
}

kvc_status kvc_stream_observe(kvc_stream* stream, uint32_t layer, uint32_t n_heads, const float* mass,
                              size_t mass_floats) {
  return guarded("kvc_stream_observe", [&] {
    require(stream != nullptr, "stream is NULL");
    require(mass != nullptr, "mass is NULL");
    check_observe(*stream, layer, n_heads);
    const std::size_t expected = std::size_t{n_heads} * stream->cache.n_kept();
    if (mass_floats != expected) {
      throw InvalidArgument("mass must hold n_heads x n_kept = " + std::to_string(expected) +
                            " floats, got " + std::to_string(mass_floats));
    }
    if (!stream->detector) stream->head_sum.reserve(stream->cache.n_kept());
    feed_mass(*stream, layer, n_heads, {mass, mass_floats});
  });
}

kvc_status kvc_stream_reset(kvc_stream* stream) {
  return guarded("kvc_stream_reset", [&] {
    require(stream != nullptr, "stream is NULL");
    // Build the empty cache first: if that throws, the old one is untouched. The move assignment
    // then returns the old pages to the pool and cannot throw.
    kvcache::StreamCache fresh(stream->pool, stream->cache.config());
    stream->cache = std::move(fresh);
  });
}

kvc_status kvc_stream_save(const kvc_stream* stream, const char* path) {
  return guarded("kvc_stream_save", [&] {
    require(stream != nullptr, "stream is NULL");
    require(path != nullptr, "path is NULL");
    stream->cache.save(path);
  });
}

kvc_status kvc_stream_restore(kvc_stream* stream, const char* path) {
  return guarded("kvc_stream_restore", [&] {
    require(stream != nullptr, "stream is NULL");
    require(path != nullptr, "path is NULL");
    stream->cache.restore(path);
  });
}

kvc_status kvc_stream_stats_get(const kvc_stream* stream, kvc_stream_stats* out) {
  return guarded("kvc_stream_stats_get", [&] {
    require(stream != nullptr, "stream is NULL");
    require(out != nullptr, "out is NULL");
    const kvcache::StreamStats st = stream->cache.stats();
    *out = kvc_stream_stats{
        st.tokens_seen, st.tokens_kept, st.tokens_pinned, st.tokens_evicted, stream->cache.n_pending(),
        st.pages,       st.kv_bytes,    st.kv_bytes_peak, st.staging_bytes};
  });
}

kvc_status kvc_stream_tokens(const kvc_stream* stream, kvc_token_info* tokens, size_t capacity,
                             size_t* n_out) {
  return guarded("kvc_stream_tokens", [&] {
    require(stream != nullptr, "stream is NULL");
    require(n_out != nullptr, "n_out is NULL");
    const std::size_t n = stream->cache.n_kept();
    *n_out = n;
    if (tokens == nullptr) return;
    if (capacity < n) {
      throw InvalidArgument("capacity " + std::to_string(capacity) + " is less than the " +
                            std::to_string(n) + " kept tokens");
    }
    const std::vector<kvcache::KeptToken> kept = stream->cache.tokens();
    for (std::size_t i = 0; i < kept.size(); ++i) {
      const kvcache::TokenMeta& m = kept[i].meta;
      tokens[i] = kvc_token_info{m.pos,   kept[i].cache_pos, m.token,
                                 m.score, m.sink_heads,      static_cast<std::uint8_t>(m.pin)};
    }
  });
}

}  // extern "C"
