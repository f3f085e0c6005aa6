/* Calls into the C API with enum arguments outside their enumerators, as C code may pass them. C++
   cannot even form such a value without undefined behaviour (UBSan's enum check catches the load
   once optimisation no longer hides it), so c_api_test.cc makes these calls through C. */
#include "kvcache/kvcache.h"

const char* kvc_test_status_name(int status) { return kvc_status_name((kvc_status)status); }

kvc_status kvc_test_page_bytes(uint32_t page_tokens, uint32_t n_kv_heads, uint32_t head_dim, int dtype,
                               size_t* out) {
  return kvc_page_bytes(page_tokens, n_kv_heads, head_dim, (kvc_dtype)dtype, out);
}
