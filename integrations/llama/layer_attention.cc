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
                     std::span<const float> q, std::span<float> out, std::span<float> mass,
                     const AttendOptions& options) {
  // Mass is requested only when a policy or calibration reads it (hidden-sinks, h2o): it costs a
  // store per key and head.
  if (kernel == AttentionKernel::simd) {
    attend(cache, layer, q, out, mass, options);
  } else {
    attend_reference(cache, layer, q, out, mass, options);
  }
}

}  // namespace kvcache::llama
