/* kvcache C API: a paged, policy-driven KV cache for streaming LLM decode, usable from C99.
 *
 * It wraps the C++ API (page_pool.h, stream_cache.h, policy.h, attention.h, sink_detector.h)
 * one to one; see those headers for the model. In short:
 *   - a kvc_pool hands out fixed-size pages under a byte budget and may be shared by many streams;
 *   - a kvc_stream is the KV cache of one sequence; each step calls
 *       kvc_stream_begin(tokens)                 admit n tokens (the policy evicts here),
 *       kvc_stream_append(layer, k, v)           once per layer, K before RoPE,
 *       kvc_stream_attend(layer, q, ...)         attention of the newest query over the kept tokens.
 *
 * Errors. Every function returning kvc_status validates its arguments: NULL handles or pointers,
 * wrong sizes, out-of-range enums or layers give KVC_INVALID_ARGUMENT; a pool with no page left
 * gives KVC_POOL_EXHAUSTED; running out of heap gives KVC_OUT_OF_MEMORY. No C++ exception ever
 * crosses this API. A failed call leaves its stream or pool unchanged and usable (the C++ API
 * guarantees this; the wrappers add no state of their own before the call can fail).
 * The message of the last call on the calling thread is returned by kvc_last_error().
 *
 * Units. Sizes of float buffers are counts of floats (not bytes); page and memory sizes are
 * bytes; positions and token counts are tokens.
 *
 * Thread safety. Pool functions may be called from any number of threads at once. A stream must
 * not be used from two threads at once; different streams (sharing one pool or not) may be used
 * concurrently. kvc_last_error() is per thread.
 *
 * Ownership. Handles are created by *_create and released by the matching *_destroy. A stream
 * keeps its pool alive (shared ownership), so kvc_pool_destroy may be called before the streams
 * created from that pool are destroyed: the pages are freed when the last of them goes.
 */
#ifndef KVCACHE_KVCACHE_H
#define KVCACHE_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

/* Symbols stay visible even when the library is built with -fvisibility=hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define KVC_API __attribute__((visibility("default")))
#else
#define KVC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this header. kvc_version() returns the library's; they differ only when a program
 * was compiled against one release and linked against another. (CMake checks at configure time
 * that these equal the project version.) */
#define KVC_VERSION_MAJOR 0
#define KVC_VERSION_MINOR 2
#define KVC_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------------ */
/* Status codes and errors                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef enum kvc_status {
  KVC_OK = 0,               /* success */
  KVC_INVALID_ARGUMENT = 1, /* a NULL handle/pointer, a wrong size, a bad config, a call out of order */
  KVC_POOL_EXHAUSTED = 2,   /* the pool has no page left under its byte budget; retry after freeing */
  KVC_FORMAT_ERROR = 3,     /* malformed input file (kvc_stream_restore) */
  KVC_OUT_OF_MEMORY = 4,    /* the heap is exhausted (std::bad_alloc inside the library) */
  KVC_INTERNAL = 5          /* an unexpected failure inside the library: a bug, please report it */
} kvc_status;

/* Message describing the outcome of the most recent kvc_status-returning call made on this
 * thread: "" after success, otherwise a sentence naming the function and the bad argument.
 * Never NULL. The pointer is owned by the library, valid until the next kvc_* call on this
 * thread. Thread safety: per-thread storage, always safe. */
KVC_API const char* kvc_last_error(void);

/* Short constant name of a status, e.g. "KVC_POOL_EXHAUSTED" ("KVC_UNKNOWN" for other values).
 * Static storage; never NULL. */
KVC_API const char* kvc_status_name(kvc_status status);

/* Library version as MAJOR * 10000 + MINOR * 100 + PATCH (e.g. 100 for 0.1.0). */
KVC_API uint32_t kvc_version(void);
/* Library version as "MAJOR.MINOR.PATCH". Static storage; never NULL. */
KVC_API const char* kvc_version_string(void);

/* ------------------------------------------------------------------------------------------ */
/* Enumerations (values equal the C++ enums' order)                                           */
/* ------------------------------------------------------------------------------------------ */

/* Storage type of cached K and V. Computation is always f32. Formats: kvcache/quant.h; exact
 * bytes per page: kvc_page_bytes. */
typedef enum kvc_dtype {
  KVC_DTYPE_SAME = -1, /* kvc_stream_config.pinned_dtype only: the same as dtype */
  KVC_DTYPE_F32 = 0,   /* exact */
  KVC_DTYPE_F16 = 1,   /* IEEE half, round-to-nearest-even; half the memory */
  KVC_DTYPE_Q8 = 2,    /* int8, one f16 scale per token per head; any head_dim */
  KVC_DTYPE_Q4 = 3     /* 4-bit; keys per channel within a page, values per token (KIVI); even head_dim */
} kvc_dtype;

/* Which position RoPE sees for a kept token. */
typedef enum kvc_position_mode {
  KVC_POSITIONS_REINDEXED = 0, /* its index in the cache (StreamingLLM); never exceeds the budget */
  KVC_POSITIONS_ABSOLUTE = 1   /* its original position in the stream */
} kvc_position_mode;

typedef enum kvc_rope_style {
  KVC_ROPE_NONE = 0,           /* keys are stored and used as given */
  KVC_ROPE_ADJACENT_PAIRS = 1, /* rotate (x[2i], x[2i+1]) (llama2.c, Meta's Llama) */
  KVC_ROPE_HALF_SPLIT = 2      /* rotate (x[i], x[i + d/2]) (HuggingFace, GPT-NeoX) */
} kvc_rope_style;

typedef enum kvc_policy_kind {
  KVC_POLICY_FULL = 0,         /* keep everything; budget unused */
  KVC_POLICY_WINDOW = 1,       /* the last `budget` tokens */
  KVC_POLICY_SINKS = 2,        /* StreamingLLM: first `sinks` tokens + the last `budget - sinks` */
  KVC_POLICY_HIDDEN_SINKS = 3, /* initial sinks + up to `hidden_sinks` detected sinks + window;
                                  needs the detector (config.detector = 1) to detect anything */
  KVC_POLICY_H2O = 4           /* `heavy` heavy hitters by accumulated attention + recent window;
                                  needs attention mass fed back (KVC_ATTEND_OBSERVE) */
} kvc_policy_kind;

/* Why a kept token is pinned (kvc_token_info.pin). */
typedef enum kvc_pin_reason {
  KVC_PIN_NONE = 0,        /* in the rolling window */
  KVC_PIN_INITIAL = 1,     /* an initial sink */
  KVC_PIN_HIDDEN_SINK = 2, /* a detected hidden sink */
  KVC_PIN_HEAVY_HITTER = 3 /* an H2O heavy hitter */
} kvc_pin_reason;

/* ------------------------------------------------------------------------------------------ */
/* Page pool                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* A pool of equally sized pages under a byte budget (opaque). */
typedef struct kvc_pool kvc_pool;

/* Exact counters; a snapshot (each field exact, fields read one after another). */
typedef struct kvc_pool_stats {
  size_t page_bytes;           /* bytes per page after rounding up to a multiple of 64 */
  size_t pages_max;            /* pages the budget allows */
  size_t pages_reserved;       /* pages carved from arenas so far (memory actually held) */
  size_t pages_in_use;         /* pages held by streams now */
  size_t pages_free;           /* reserved pages waiting on the free list */
  size_t pages_high_water;     /* maximum of pages_in_use ever */
  size_t bytes_reserved;       /* pages_reserved * page_bytes */
  size_t bytes_in_use;         /* pages_in_use * page_bytes */
  size_t arenas;               /* arenas allocated */
  uint64_t failed_allocations; /* page requests refused for lack of budget */
} kvc_pool_stats;

/* Bytes one page needs for `page_tokens` tokens of one layer's K and V, all KV heads:
 * 2 * page_tokens * n_kv_heads * head_dim * (4 for f32, 2 for f16). Pass it (or more) as
 * kvc_pool_create's page_bytes for streams with that layout.
 * Errors: out NULL, a zero size, a bad dtype, or a page over 2 GiB -> KVC_INVALID_ARGUMENT. */
KVC_API kvc_status kvc_page_bytes(uint32_t page_tokens, uint32_t n_kv_heads, uint32_t head_dim,
                                  kvc_dtype dtype, size_t* out);

/* Creates a pool of pages of `page_bytes` bytes (> 0, rounded up to a multiple of 64) holding at
 * most `max_bytes` bytes of pages (>= one rounded page). Memory is reserved lazily in arenas of
 * about 4 MiB as streams need pages, so an unused budget costs nothing.
 * On success *out is a new handle the caller owns (release with kvc_pool_destroy); on failure
 * *out is set to NULL (when out is not NULL).
 * Errors: out NULL, page_bytes 0, max_bytes below one page -> KVC_INVALID_ARGUMENT;
 * KVC_OUT_OF_MEMORY. */
KVC_API kvc_status kvc_pool_create(size_t page_bytes, size_t max_bytes, kvc_pool** out);

/* Releases the caller's handle. Streams created from the pool keep it alive until they are
 * destroyed, so this may be called first. NULL is a no-op. Do not use `pool` afterwards. */
KVC_API void kvc_pool_destroy(kvc_pool* pool);

/* Copies the pool's counters into *out. Thread safe (concurrent with page traffic).
 * Errors: pool or out NULL -> KVC_INVALID_ARGUMENT. */
KVC_API kvc_status kvc_pool_stats_get(const kvc_pool* pool, kvc_pool_stats* out);

/* ------------------------------------------------------------------------------------------ */
/* Stream                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* The KV cache of one sequence (opaque). */
typedef struct kvc_stream kvc_stream;

/* A plain description of a stream. Fill it with kvc_stream_config_init, then set fields: new
 * fields may be added at the end in later versions with defaults set by the init function. */
typedef struct kvc_stream_config {
  /* Model shape. */
  uint32_t n_layers;   /* > 0, <= 4096 */
  uint32_t n_kv_heads; /* KV heads per layer, > 0 */
  uint32_t head_dim;   /* floats per head row, > 0; even unless rope_style is KVC_ROPE_NONE */
  uint32_t n_heads;    /* query heads (a multiple of n_kv_heads) the detector expects; 0 = n_kv_heads.
                          Only used when detector is on. Default 0. */
  /* Storage. */
  uint32_t page_tokens; /* tokens per page, > 0. Default 16. Pool pages must be >= kvc_page_bytes. */
  kvc_dtype dtype;      /* default KVC_DTYPE_F32 */
  /* Positions. */
  kvc_position_mode positions; /* default KVC_POSITIONS_REINDEXED */
  kvc_rope_style rope_style;   /* default KVC_ROPE_ADJACENT_PAIRS */
  double rope_theta;           /* RoPE base, > 1. Default 10000 */
  /* Retention policy (see policy.h). Eviction happens inside kvc_stream_begin. */
  kvc_policy_kind policy;  /* default KVC_POLICY_FULL */
  uint32_t budget;         /* tokens kept per layer, pinned included; > 0 unless policy is FULL */
  uint32_t sinks;          /* initial tokens pinned (SINKS, HIDDEN_SINKS); < budget. Default 4 */
  uint32_t hidden_sinks;   /* cap on detected sinks pinned (HIDDEN_SINKS). Default 8 */
  uint32_t heavy;          /* heavy-hitter slots (H2O); 0 = budget / 2. Default 0 */
  uint16_t min_sink_heads; /* (layer, head) pairs a detected sink needs (HIDDEN_SINKS). Default 2 */
  /* Sink detector (sink_detector.h): ACT-style rule, an EMA of attention received vs alpha / N. */
  int detector;         /* non-zero: keep detector state per token and feed it from
                           kvc_stream_attend(KVC_ATTEND_OBSERVE) / kvc_stream_observe. Default 0 */
  float detector_alpha; /* sink threshold in multiples of the uniform share, > 1. Default 5 */
  float detector_decay; /* per-query EMA decay in (0, 1). Default 0.9 */
  /* Storage of the pinned region (sinks, heavy hitters); `dtype` is then the window's. Pinned
   * pages have the window's page bytes and hold as many tokens as fit. Default KVC_DTYPE_SAME. */
  kvc_dtype pinned_dtype;
} kvc_stream_config;

/* Sets every field of *config to its default (documented above); n_layers, n_kv_heads, head_dim
 * are 0 and must be set. NULL is a no-op. */
KVC_API void kvc_stream_config_init(kvc_stream_config* config);

/* Counters of one stream. */
typedef struct kvc_stream_stats {
  uint64_t tokens_seen;    /* tokens ever admitted by kvc_stream_begin */
  uint32_t tokens_kept;    /* tokens in the cache now (per layer) */
  uint32_t tokens_pinned;  /* of which pinned (sinks, heavy hitters) */
  uint64_t tokens_evicted; /* tokens dropped so far */
  uint32_t n_pending;      /* tokens admitted by the last successful begin (the current batch) */
  size_t pages;            /* pages held, all layers */
  size_t kv_bytes;         /* pages * pool page bytes: memory held, slack included */
  size_t kv_bytes_peak;    /* maximum of kv_bytes ever */
  size_t staging_bytes;    /* f16 copies of keys of q4 pages being filled, outside the pool */
} kvc_stream_stats;

/* A kept token, as listed by kvc_stream_tokens in cache order (pinned first, then the window). */
typedef struct kvc_token_info {
  int64_t pos;         /* original position in the stream, 0-based */
  int64_t cache_pos;   /* the position RoPE sees for it now */
  int32_t token;       /* token id given to kvc_stream_begin */
  float score;         /* attention mass accumulated (fed by KVC_ATTEND_OBSERVE / kvc_stream_observe) */
  uint16_t sink_heads; /* (layer, head) pairs where the detector calls it a sink now */
  uint8_t pin;         /* a kvc_pin_reason */
} kvc_token_info;

/* Creates a stream drawing pages from `pool` (shared: the stream keeps the pool alive).
 * On success *out is a new handle the caller owns (release with kvc_stream_destroy); on failure
 * *out is set to NULL (when out is not NULL).
 * Errors: NULL arguments, a bad field (the message names it: n_layers, budget, sinks >= budget,
 * pool pages smaller than kvc_page_bytes of this layout, ...) -> KVC_INVALID_ARGUMENT;
 * KVC_OUT_OF_MEMORY. No page is taken until the first begin. */
KVC_API kvc_status kvc_stream_create(kvc_pool* pool, const kvc_stream_config* config, kvc_stream** out);

/* Returns every page of the stream to its pool and frees the handle. NULL is a no-op. */
KVC_API void kvc_stream_destroy(kvc_stream* stream);

/* Admits `n` new tokens (ids in token_ids[0..n)). This is where eviction happens: the policy drops
 * (or pins) the oldest window tokens so that kept tokens stay within the budget, then slots are
 * reserved in every layer. Requires every layer of the previous batch to be appended, and the
 * batch to fit in the budget beside the pinned region. A batch that causes no eviction equals n
 * single-token steps. There is no separate evict call: the budget is enforced here, per policy
 * (see kvc_stream_reset to drop everything).
 * Errors: stream/token_ids NULL, n 0, previous batch incomplete -> KVC_INVALID_ARGUMENT;
 * no page left -> KVC_POOL_EXHAUSTED. Either way nothing changed: the stream stays usable
 * (e.g. destroy another stream, then call begin again). */
KVC_API kvc_status kvc_stream_begin(kvc_stream* stream, const int32_t* token_ids, size_t n);

/* Writes K and V of the tokens admitted by the last begin for `layer`, once per layer.
 * k, v: n_floats floats each, token-major [n_pending][n_kv_heads][head_dim]; k before RoPE
 * (the cache rotates it). n_floats must equal n_pending * n_kv_heads * head_dim. The data is
 * copied; the caller keeps ownership of k and v.
 * Errors: NULL pointers, layer >= n_layers, wrong n_floats, layer already written
 * -> KVC_INVALID_ARGUMENT. */
KVC_API kvc_status kvc_stream_append(kvc_stream* stream, uint32_t layer, const float* k, const float* v,
                                     size_t n_floats);

/* Flags of kvc_attend_options. */
#define KVC_ATTEND_OBSERVE                                                \
  1u /* feed the attention mass back for the policy: to the sink detector \
        if the stream has one (it also accumulates scores), else to the   \
        token scores (H2O). Use it for the newest query only, once per    \
        layer per step. */
#define KVC_ATTEND_REFERENCE                                          \
  2u /* use the scalar reference kernel (two-pass softmax in double), \
        the oracle of the SIMD kernel: slower, for testing */

/* Optional settings of kvc_stream_attend (NULL = all defaults, i.e. all fields zero except
 * query_index = -1). */
typedef struct kvc_attend_options {
  float scale;         /* logit scale; 0 = 1 / sqrt(head_dim) */
  int64_t query_index; /* cache index of the query token; it attends to [0, query_index].
                          -1 = the newest token (decode). Use others for batched prefill. */
  uint32_t flags;      /* KVC_ATTEND_* bits */
} kvc_attend_options;

/* Sets *options to the defaults (scale 0, query_index -1, flags 0). NULL is a no-op. */
KVC_API void kvc_attend_options_init(kvc_attend_options* options);

/* Attention output of one query token for `layer` over the kept tokens (GQA: n_heads query heads
 * share each KV head; n_heads must be a multiple of n_kv_heads). The layer's append for the
 * current batch must be done.
 *   q:    q_floats = n_heads * head_dim floats, before RoPE (rotated here to the query position);
 *   out:  out_floats = n_heads * head_dim floats, written;
 *   mass: NULL, or mass_floats = n_heads * n_kept floats: the probability each query head gave
 *         each kept token (cache order, zero past query_index). n_kept is
 *         kvc_stream_stats.tokens_kept.
 * With KVC_ATTEND_OBSERVE the mass is computed (into an internal buffer if mass is NULL) and fed
 * back as the flag describes; with a detector, n_heads must equal the config's n_heads.
 * Errors: NULL stream/q/out, wrong sizes, layer out of range or not yet appended, bad options
 * -> KVC_INVALID_ARGUMENT. On error out and mass may have been partly written; the stream is
 * unchanged. */
KVC_API kvc_status kvc_stream_attend(kvc_stream* stream, uint32_t layer, uint32_t n_heads, const float* q,
                                     size_t q_floats, float* out, size_t out_floats, float* mass,
                                     size_t mass_floats, const kvc_attend_options* options);

/* For runtimes with their own attention kernel: feeds the attention mass of the newest query of
 * `layer` back, exactly as kvc_stream_attend's KVC_ATTEND_OBSERVE does. mass: n_heads * n_kept
 * floats (with a detector, n_heads is the config's n_heads).
 * Errors: NULL arguments, wrong sizes, layer out of range -> KVC_INVALID_ARGUMENT. */
KVC_API kvc_status kvc_stream_observe(kvc_stream* stream, uint32_t layer, uint32_t n_heads, const float* mass,
                                      size_t mass_floats);

/* Drops every token and returns all of the stream's pages to the pool, keeping its config:
 * the stream is then as if just created (tokens_seen 0). This is the only explicit eviction;
 * per-token eviction is the policy's, inside kvc_stream_begin.
 * Errors: stream NULL -> KVC_INVALID_ARGUMENT; KVC_OUT_OF_MEMORY (the stream is then unchanged). */
KVC_API kvc_status kvc_stream_reset(kvc_stream* stream);

/* Writes the stream (K/V, token metadata, detector state, counters) to `path` atomically: a
 * temporary file beside it is written, fsynced and renamed (StreamCache::save).
 * Errors: NULL arguments or pending tokens not appended in every layer -> KVC_INVALID_ARGUMENT;
 * I/O failure -> KVC_INTERNAL with the OS message (the previous file at `path` is untouched). */
KVC_API kvc_status kvc_stream_save(const kvc_stream* stream, const char* path);

/* Replaces the stream's contents with the snapshot at `path`, which must have been saved from a
 * stream with the same config (StreamCache::restore).
 * Errors: a missing, truncated, corrupted or mismatched file -> KVC_FORMAT_ERROR naming the file
 * and the problem; KVC_POOL_EXHAUSTED; on any error the stream is unchanged. */
KVC_API kvc_status kvc_stream_restore(kvc_stream* stream, const char* path);

/* Copies the stream's counters into *out.
 * Errors: stream or out NULL -> KVC_INVALID_ARGUMENT. */
KVC_API kvc_status kvc_stream_stats_get(const kvc_stream* stream, kvc_stream_stats* out);

/* Lists the kept tokens in cache order. *n_out is always set to the number of kept tokens (when
 * n_out is not NULL). If tokens is NULL only the count is returned (capacity ignored); otherwise
 * tokens[0..n_kept) is written and capacity (in elements) must be >= n_kept.
 * Errors: stream or n_out NULL, capacity too small -> KVC_INVALID_ARGUMENT (nothing written to
 * tokens, *n_out still set so the caller can size a buffer); KVC_OUT_OF_MEMORY. */
KVC_API kvc_status kvc_stream_tokens(const kvc_stream* stream, kvc_token_info* tokens, size_t capacity,
                                     size_t* n_out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KVCACHE_KVCACHE_H */
