#include "llama/model_weights.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <utility>

#include "llama/ggml_quant.h"

namespace kvcache::llama {

void ModelWeights::embed(std::int32_t token, std::span<float> out) const {
  assert(token >= 0 && static_cast<std::uint32_t>(token) < token_embedding.rows);
  assert(out.size() == token_embedding.cols);
  const std::byte* row = token_embedding.row(static_cast<std::uint32_t>(token));
  if (token_embedding.type == GgmlType::f32) {
    std::memcpy(out.data(), row, out.size() * sizeof(float));
  } else {
    dequantize_row(token_embedding.type, row, out);
  }
}

std::size_t ModelWeights::step_matrix_bytes() const {
  std::size_t n = output.bytes();
  for (const LayerWeights& l : layers) {
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down})
      n += m->bytes();
  }
  return n;
}

std::size_t ModelWeights::weight_bytes() const {
  std::size_t n = step_matrix_bytes() + output_norm.size_bytes();
  if (output.data != token_embedding.data) n += token_embedding.bytes();
  for (const LayerWeights& l : layers) {
    for (std::span<const float> v : {l.attn_norm, l.ffn_norm, l.bq, l.bk, l.bv}) n += v.size_bytes();
  }
  return n;
}

std::string ModelWeights::tensor_type_summary() const {
  std::vector<std::pair<GgmlType, std::uint32_t>> v(tensor_types.begin(), tensor_types.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  for (const auto& [type, count] : v) {
    if (!out.empty()) out += ", ";
    out += std::string(ggml_type_name(type)) + " x" + std::to_string(count);
  }
  return out;
}

}  // namespace kvcache::llama
