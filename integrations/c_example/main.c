/* A C99 walk through the kvcache C API: one pool, one StreamingLLM stream (4 sinks + window),
 * a few thousand tokens of synthetic K/V with decode attention at every step, the stats, and
 * error handling (a wrong size, a NULL handle, and pool exhaustion the stream survives).
 * Exits 0 when every check holds; prints what failed otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/kvcache.h"

enum {
  N_LAYERS = 2,
  N_KV_HEADS = 2,
  N_HEADS = 4, /* grouped-query attention: 2 query heads per KV head */
  HEAD_DIM = 16,
  PAGE_TOKENS = 16,
  SINKS = 4,
  BUDGET = 256,
  N_TOKENS = 3000
};

/* Prints the failed call and the library's message, then leaves. */
#define CHECK_OK(call)                                                                          \
  do {                                                                                          \
    kvc_status st_ = (call);                                                                    \
    if (st_ != KVC_OK) {                                                                        \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call, kvc_status_name(st_), \
              kvc_last_error());                                                                \
      exit(1);                                                                                  \
    }                                                                                           \
  } while (0)

#define EXPECT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

/* Deterministic values in [-1, 1): a 32-bit xorshift, so the run is the same everywhere. */
static unsigned long rng_state = 2463534242UL;
static float next_float(void) {
  rng_state ^= (rng_state << 13) & 0xffffffffUL;
  rng_state ^= rng_state >> 17;
  rng_state ^= (rng_state << 5) & 0xffffffffUL;
  return (float)(rng_state & 0xffffffUL) / 8388608.0f - 1.0f;
}

static void fill(float* x, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) x[i] = next_float();
}

/* Streams N_TOKENS tokens one at a time with attention in every layer; exits on any failure. */
static void run_stream(kvc_stream* stream) {
  float k[N_KV_HEADS * HEAD_DIM], v[N_KV_HEADS * HEAD_DIM];
  float q[N_HEADS * HEAD_DIM], out[N_HEADS * HEAD_DIM];
  static float mass[N_HEADS * BUDGET];
  kvc_stream_stats st;
  int32_t t;
  uint32_t il;
  for (t = 0; t < N_TOKENS; ++t) {
    const int32_t id = t % 32000;
    CHECK_OK(kvc_stream_begin(stream, &id, 1));
    for (il = 0; il < N_LAYERS; ++il) {
      fill(k, N_KV_HEADS * HEAD_DIM);
      fill(v, N_KV_HEADS * HEAD_DIM);
      CHECK_OK(kvc_stream_append(stream, il, k, v, N_KV_HEADS * HEAD_DIM));
      fill(q, N_HEADS * HEAD_DIM);
      CHECK_OK(kvc_stream_stats_get(stream, &st));
      /* mass is optional; ask for it on the last token to check it is a distribution. */
      if (t == N_TOKENS - 1) {
        size_t h, j;
        CHECK_OK(kvc_stream_attend(stream, il, N_HEADS, q, N_HEADS * HEAD_DIM, out, N_HEADS * HEAD_DIM, mass,
                                   (size_t)N_HEADS * st.tokens_kept, NULL));
        for (h = 0; h < N_HEADS; ++h) {
          float sum = 0.f;
          for (j = 0; j < st.tokens_kept; ++j) sum += mass[h * st.tokens_kept + j];
          EXPECT(sum > 0.999f && sum < 1.001f);
        }
      } else {
        CHECK_OK(kvc_stream_attend(stream, il, N_HEADS, q, N_HEADS * HEAD_DIM, out, N_HEADS * HEAD_DIM, NULL,
                                   0, NULL));
      }
      /* Values are in [-1, 1), so every output (a convex mix of values) is too. */
      EXPECT(out[0] >= -1.0f && out[0] <= 1.0f && out[N_HEADS * HEAD_DIM - 1] >= -1.0f &&
             out[N_HEADS * HEAD_DIM - 1] <= 1.0f);
    }
  }
}

/* A deliberately tiny pool: a full-policy stream runs out of pages, reports it, and stays usable. */
static void show_exhaustion(void) {
  kvc_pool* pool = NULL;
  kvc_stream* stream = NULL;
  kvc_stream_config cfg;
  kvc_stream_stats st;
  size_t page_bytes = 0;
  float kv[N_KV_HEADS * HEAD_DIM];
  int32_t t;
  kvc_status status = KVC_OK;

  CHECK_OK(kvc_page_bytes(PAGE_TOKENS, N_KV_HEADS, HEAD_DIM, KVC_DTYPE_F32, &page_bytes));
  CHECK_OK(kvc_pool_create(page_bytes, 2 * page_bytes, &pool)); /* one page per layer */
  kvc_stream_config_init(&cfg);
  cfg.n_layers = N_LAYERS;
  cfg.n_kv_heads = N_KV_HEADS;
  cfg.head_dim = HEAD_DIM;
  cfg.page_tokens = PAGE_TOKENS;
  cfg.policy = KVC_POLICY_FULL;
  CHECK_OK(kvc_stream_create(pool, &cfg, &stream));
  fill(kv, N_KV_HEADS * HEAD_DIM);
  for (t = 0; t < 100 && status == KVC_OK; ++t) {
    status = kvc_stream_begin(stream, &t, 1);
    if (status == KVC_OK) {
      uint32_t il;
      for (il = 0; il < N_LAYERS; ++il)
        CHECK_OK(kvc_stream_append(stream, il, kv, kv, N_KV_HEADS * HEAD_DIM));
    }
  }
  EXPECT(status == KVC_POOL_EXHAUSTED);
  printf("expected error: %s: %s\n", kvc_status_name(status), kvc_last_error());
  CHECK_OK(kvc_stream_stats_get(stream, &st));
  EXPECT(st.tokens_kept == PAGE_TOKENS); /* the failed begin changed nothing */
  /* Dropping the tokens gives the pages back; the same stream then continues. */
  CHECK_OK(kvc_stream_reset(stream));
  CHECK_OK(kvc_stream_begin(stream, &t, 1));
  printf("after reset the stream continues: begin -> %s\n", kvc_status_name(KVC_OK));
  /* The pool handle may go first: the stream keeps the pool alive. */
  kvc_pool_destroy(pool);
  kvc_stream_destroy(stream);
}

int main(void) {
  kvc_pool* pool = NULL;
  kvc_stream* stream = NULL;
  kvc_stream_config cfg;
  kvc_pool_stats ps;
  kvc_stream_stats st;
  kvc_token_info kept[BUDGET];
  size_t n_kept = 0, page_bytes = 0, i;
  float small[3] = {0.f, 0.f, 0.f};
  const int32_t next_id = 7;
  kvc_status status;

  printf("kvcache %s (header %d.%d.%d)\n", kvc_version_string(), KVC_VERSION_MAJOR, KVC_VERSION_MINOR,
         KVC_VERSION_PATCH);

  /* Room for the budget in every layer plus a page of slack for the partly consumed window page
   * and the pinned sinks' page. */
  CHECK_OK(kvc_page_bytes(PAGE_TOKENS, N_KV_HEADS, HEAD_DIM, KVC_DTYPE_F32, &page_bytes));
  CHECK_OK(kvc_pool_create(page_bytes, (size_t)N_LAYERS * (BUDGET / PAGE_TOKENS + 4) * page_bytes, &pool));

  kvc_stream_config_init(&cfg);
  cfg.n_layers = N_LAYERS;
  cfg.n_kv_heads = N_KV_HEADS;
  cfg.head_dim = HEAD_DIM;
  cfg.page_tokens = PAGE_TOKENS;
  cfg.policy = KVC_POLICY_SINKS;
  cfg.sinks = SINKS;
  cfg.budget = BUDGET;
  CHECK_OK(kvc_stream_create(pool, &cfg, &stream));

  run_stream(stream);

  CHECK_OK(kvc_stream_stats_get(stream, &st));
  CHECK_OK(kvc_pool_stats_get(pool, &ps));
  printf("stream: seen %llu, kept %u (pinned %u), evicted %llu, pages %zu, kv_bytes %zu (peak %zu)\n",
         (unsigned long long)st.tokens_seen, st.tokens_kept, st.tokens_pinned,
         (unsigned long long)st.tokens_evicted, st.pages, st.kv_bytes, st.kv_bytes_peak);
  printf("pool: page_bytes %zu, pages in use %zu of %zu (high water %zu), reserved %zu bytes\n",
         ps.page_bytes, ps.pages_in_use, ps.pages_max, ps.pages_high_water, ps.bytes_reserved);
  EXPECT(st.tokens_seen == N_TOKENS);
  EXPECT(st.tokens_kept == BUDGET && st.tokens_pinned == SINKS);
  EXPECT(st.tokens_evicted == N_TOKENS - BUDGET);
  EXPECT(ps.pages_in_use == st.pages);

  /* StreamingLLM keeps positions 0..SINKS-1 and the last BUDGET - SINKS, re-indexed 0..BUDGET-1. */
  CHECK_OK(kvc_stream_tokens(stream, kept, BUDGET, &n_kept));
  EXPECT(n_kept == BUDGET);
  for (i = 0; i < n_kept; ++i) {
    const int64_t want = i < SINKS ? (int64_t)i : (int64_t)(N_TOKENS - BUDGET + i);
    EXPECT(kept[i].pos == want && kept[i].cache_pos == (int64_t)i);
    EXPECT(kept[i].pin == (i < SINKS ? KVC_PIN_INITIAL : KVC_PIN_NONE));
  }
  printf("kept positions: %lld..%lld (sinks), %lld..%lld (window)\n", (long long)kept[0].pos,
         (long long)kept[SINKS - 1].pos, (long long)kept[SINKS].pos, (long long)kept[n_kept - 1].pos);

  /* Errors are codes plus a message; nothing is thrown and the stream is unchanged. */
  CHECK_OK(kvc_stream_begin(stream, &next_id, 1));
  status = kvc_stream_append(stream, 0, small, small, 3);
  EXPECT(status == KVC_INVALID_ARGUMENT);
  printf("expected error: %s: %s\n", kvc_status_name(status), kvc_last_error());
  status = kvc_stream_stats_get(NULL, &st);
  EXPECT(status == KVC_INVALID_ARGUMENT);
  printf("expected error: %s: %s\n", kvc_status_name(status), kvc_last_error());

  show_exhaustion();

  kvc_stream_destroy(stream);
  CHECK_OK(kvc_pool_stats_get(pool, &ps));
  EXPECT(ps.pages_in_use == 0);
  kvc_pool_destroy(pool);
  printf("ok\n");
  return 0;
}
