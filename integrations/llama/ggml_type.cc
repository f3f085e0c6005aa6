#include "llama/ggml_type.h"

namespace kvcache::llama {
namespace {

struct Traits {
  std::string_view name;
  std::uint32_t block_elems;
  std::uint32_t block_bytes;
};

Traits traits(GgmlType type) {
  switch (type) {
    case GgmlType::f32:
      return {"f32", 1, 4};
    case GgmlType::f16:
      return {"f16", 1, 2};
    case GgmlType::bf16:
      return {"bf16", 1, 2};
    case GgmlType::q8_0:
      return {"q8_0", 32, 2 + 32};
    case GgmlType::q4_0:
      return {"q4_0", 32, 2 + 16};
    case GgmlType::q4_k:
      return {"q4_K", 256, 2 + 2 + 12 + 128};
    case GgmlType::q6_k:
      return {"q6_K", 256, 128 + 64 + 16 + 2};
  }
  return {"?", 1, 0};  // unreachable for values made by ggml_type_from_raw
}

}  // namespace

std::optional<GgmlType> ggml_type_from_raw(std::uint32_t raw) {
  switch (static_cast<GgmlType>(raw)) {
    case GgmlType::f32:
    case GgmlType::f16:
    case GgmlType::bf16:
    case GgmlType::q8_0:
    case GgmlType::q4_0:
    case GgmlType::q4_k:
    case GgmlType::q6_k:
      return static_cast<GgmlType>(raw);
  }
  return std::nullopt;
}

std::string_view ggml_type_name(GgmlType type) { return traits(type).name; }
std::uint32_t ggml_block_elems(GgmlType type) { return traits(type).block_elems; }
std::uint32_t ggml_block_bytes(GgmlType type) { return traits(type).block_bytes; }

std::optional<std::size_t> ggml_row_bytes(GgmlType type, std::uint64_t n) {
  const Traits t = traits(type);
  if (t.block_bytes == 0 || n % t.block_elems != 0) return std::nullopt;
  const std::uint64_t blocks = n / t.block_elems;
  if (blocks > (std::uint64_t{1} << 40)) return std::nullopt;  // no real row is this long
  return static_cast<std::size_t>(blocks * t.block_bytes);
}

}  // namespace kvcache::llama
