#include "llama/layer_attention.h"

#include <string>

#include "kvcache/error.h"

namespace kvcache::llama {

std::string_view attention_kernel_name(AttentionKernel kernel) {
  return kernel == AttentionKernel::simd ? "simd" : "reference";
}

AttentionKernel parse_attention_kernel(std::string_view name) {
  if (name == "simd") return AttentionKernel::simd;
  if (name == "reference") return AttentionKernel::reference;
  throw InvalidArgument("attention kernel '" + std::string(name) + "' is not one of simd, reference");
}

void layer_attention(AttentionKernel kernel, const StreamCache& cache, std::uint32_t layer,
                     std::span<const float> q, std::span<float> out, const AttendOptions& options) {
  // No attention mass is requested: none of the policies the runtime offers (full, window, sinks)
  // uses it, and skipping it saves a store per key and head.
  if (kernel == AttentionKernel::simd) {
    attend(cache, layer, q, out, {}, options);
  } else {
    attend_reference(cache, layer, q, out, {}, options);
  }
}

}  // namespace kvcache::llama
