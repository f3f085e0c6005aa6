/* Consumer of the installed kvcache through pkg-config: the C API, compiled as C99. */
#include <stdio.h>

#include "kvcache/kvcache.h"

int main(void) {
  kvc_pool* pool = NULL;
  kvc_stream* stream = NULL;
  kvc_stream_config cfg;
  kvc_stream_stats st;
  size_t page_bytes = 0;
  float kv[4] = {0.5f, 0.5f, 0.5f, 0.5f}, q[4] = {1.f, 1.f, 1.f, 1.f}, out[4];
  int32_t t;

  if (kvc_page_bytes(16, 1, 4, KVC_DTYPE_F32, &page_bytes) != KVC_OK ||
      kvc_pool_create(page_bytes, 16 * page_bytes, &pool) != KVC_OK) {
    fprintf(stderr, "consumer_pkgconfig: %s\n", kvc_last_error());
    return 1;
  }
  kvc_stream_config_init(&cfg);
  cfg.n_layers = 1;
  cfg.n_kv_heads = 1;
  cfg.head_dim = 4;
  cfg.policy = KVC_POLICY_SINKS;
  cfg.sinks = 1;
  cfg.budget = 8;
  if (kvc_stream_create(pool, &cfg, &stream) != KVC_OK) {
    fprintf(stderr, "consumer_pkgconfig: %s\n", kvc_last_error());
    return 1;
  }
  for (t = 0; t < 20; ++t) {
    if (kvc_stream_begin(stream, &t, 1) != KVC_OK || kvc_stream_append(stream, 0, kv, kv, 4) != KVC_OK) {
      fprintf(stderr, "consumer_pkgconfig: %s\n", kvc_last_error());
      return 1;
    }
  }
  if (kvc_stream_attend(stream, 0, 1, q, 4, out, 4, NULL, 0, NULL) != KVC_OK ||
      kvc_stream_stats_get(stream, &st) != KVC_OK || st.tokens_kept != 8 || out[0] < 0.499f ||
      out[0] > 0.501f) {
    fprintf(stderr, "consumer_pkgconfig: unexpected result: %s\n", kvc_last_error());
    return 1;
  }
  kvc_stream_destroy(stream);
  kvc_pool_destroy(pool);
  printf("consumer_pkgconfig: kvcache %s ok\n", kvc_version_string());
  return 0;
}
