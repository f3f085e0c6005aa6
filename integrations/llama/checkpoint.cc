#include "llama/checkpoint.h"

#include <array>
#include <cassert>
#include <cmath>
#include <fstream>
#include <limits>
#include <string_view>

#include "kvcache/error.h"
#include "llama/binary_io.h"

namespace kvcache::llama {
namespace {

constexpr std::string_view kCheckpointWhat = "checkpoint";
constexpr std::array<std::string_view, 7> kHeaderFields = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                                           "n_kv_heads", "vocab_size", "seq_len"};
constexpr std::uint64_t kHeaderBytes = kHeaderFields.size() * sizeof(std::int32_t);

// One tensor of the file: its name (used in messages) and size in floats.
struct TensorSpec {
  std::string_view name;
  std::uint64_t n_floats = 0;
};

// Multiplies sizes, throwing instead of wrapping: a hostile header must not make a huge tensor
// look small.
std::uint64_t checked_mul(const std::string& label, const std::string& hint, std::string_view tensor,
                          std::initializer_list<std::uint64_t> factors) {
  std::uint64_t r = 1;
  for (std::uint64_t f : factors) {
    if (__builtin_mul_overflow(r, f, &r)) {
      throw FormatError(label + ": size of tensor '" + std::string(tensor) + "' overflows 64 bits" + hint);
    }
  }
  return r;
}

// Parses the header and checks the fields on their own and against each other (sizes are checked
// against the file length by the caller). Reads nothing but the header bytes.
ModelConfig parse_header(std::span<const std::byte> header, const std::string& file) {
  ByteReader r(header, file, kCheckpointWhat);
  std::array<std::int32_t, kHeaderFields.size()> v{};
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = r.i32(kHeaderFields[i]);

  auto field = [&](std::size_t i, std::int32_t value) -> std::uint32_t {
    if (value <= 0) {
      r.fail("header field '" + std::string(kHeaderFields[i]) + "' = " + std::to_string(value) +
             " must be positive");
    }
    return static_cast<std::uint32_t>(value);
  };

  ModelConfig c;
  c.dim = field(0, v[0]);
  c.hidden_dim = field(1, v[1]);
  c.n_layers = field(2, v[2]);
  c.n_heads = field(3, v[3]);
  c.n_kv_heads = field(4, v[4]);
  // A negative vocab_size flags a separate classifier; INT32_MIN has no positive counterpart.
  c.shared_classifier = v[5] > 0;
  if (v[5] == std::numeric_limits<std::int32_t>::min())
    r.fail("header field 'vocab_size' = INT32_MIN is invalid");
  c.vocab_size = field(5, v[5] < 0 ? -v[5] : v[5]);
  c.seq_len = field(6, v[6]);

  if (c.dim % c.n_heads != 0) {
    r.fail("header field 'dim' = " + std::to_string(c.dim) +
           " is not a multiple of 'n_heads' = " + std::to_string(c.n_heads));
  }
  if (c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads != 0) {
    r.fail("header field 'n_heads' = " + std::to_string(c.n_heads) +
           " is not a multiple of 'n_kv_heads' = " + std::to_string(c.n_kv_heads));
  }
  if (c.head_dim() % 2 != 0) {
    r.fail("head size dim / n_heads = " + std::to_string(c.head_dim()) +
           " is odd (header fields 'dim', 'n_heads'); RoPE rotates pairs");
  }
  // Token ids are int32 and tokens 0..258 are the special and byte-fallback pieces.
  if (c.vocab_size < 259) {
    r.fail("header field 'vocab_size' = " + std::to_string(c.vocab_size) +
           " is below 259 (3 special tokens + 256 byte tokens)");
  }
  return c;
}

// Names the header fields that alone exceed the file (each field is a factor of some tensor's
// size, so none can be larger than the number of floats in the file). Appended to size errors so
// a hostile or garbled dimension is named, not only the first tensor that no longer fits.
std::string oversized_fields(const ModelConfig& c, std::uint64_t file_size) {
  const std::uint64_t floats = file_size > kHeaderBytes ? (file_size - kHeaderBytes) / sizeof(float) : 0;
  const std::uint32_t values[] = {c.dim,        c.hidden_dim, c.n_layers, c.n_heads,
                                  c.n_kv_heads, c.vocab_size, c.seq_len};
  std::string out;
  for (std::size_t i = 0; i < kHeaderFields.size(); ++i) {
    if (values[i] > floats) {
      out += (out.empty() ? " (" : ", ") + std::string("header field '") + std::string(kHeaderFields[i]) +
             "' = " + std::to_string(values[i]) + " is larger than a file of " + std::to_string(file_size) +
             " bytes can hold";
    }
  }
  return out.empty() ? out : out + ")";
}

std::vector<TensorSpec> tensor_specs(const ModelConfig& c, const std::string& label,
                                     const std::string& hint) {
  const std::uint64_t L = c.n_layers, d = c.dim, h = c.hidden_dim, kv = c.kv_dim(), V = c.vocab_size;
  std::vector<TensorSpec> t = {
      {"token_embedding", checked_mul(label, hint, "token_embedding", {V, d})},
      {"rms_att_weight", checked_mul(label, hint, "rms_att_weight", {L, d})},
      {"wq", checked_mul(label, hint, "wq", {L, d, d})},
      {"wk", checked_mul(label, hint, "wk", {L, kv, d})},
      {"wv", checked_mul(label, hint, "wv", {L, kv, d})},
      {"wo", checked_mul(label, hint, "wo", {L, d, d})},
      {"rms_ffn_weight", checked_mul(label, hint, "rms_ffn_weight", {L, d})},
      {"w1", checked_mul(label, hint, "w1", {L, h, d})},
      {"w2", checked_mul(label, hint, "w2", {L, d, h})},
      {"w3", checked_mul(label, hint, "w3", {L, h, d})},
      {"rms_final_weight", d},
      {"freq_cis_real", checked_mul(label, hint, "freq_cis_real", {c.seq_len, c.head_dim() / 2})},
      {"freq_cis_imag", checked_mul(label, hint, "freq_cis_imag", {c.seq_len, c.head_dim() / 2})},
  };
  if (!c.shared_classifier) t.push_back({"wcls", checked_mul(label, hint, "wcls", {V, d})});
  return t;
}

}  // namespace

std::shared_ptr<const Checkpoint> Checkpoint::load(const std::filesystem::path& path) {
  const std::string label = file_label(kCheckpointWhat, path);
  const std::uint64_t file_size = regular_file_size(path, kCheckpointWhat);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(label + ": cannot open for reading");

  std::array<std::byte, kHeaderBytes> header_buf{};
  const std::size_t header_len = static_cast<std::size_t>(std::min<std::uint64_t>(file_size, kHeaderBytes));
  in.read(reinterpret_cast<char*>(header_buf.data()), static_cast<std::streamsize>(header_len));
  if (static_cast<std::size_t>(in.gcount()) != header_len)
    throw FormatError(label + ": short read of the header");

  auto ck = std::make_shared<Checkpoint>(Key{});
  ck->path_ = path;
  ck->config_ = parse_header(std::span(header_buf).first(header_len), path.string());
  const ModelConfig& c = ck->config_;

  // Lay the tensors out and check each against the file length before reading any of them.
  const std::string hint = oversized_fields(c, file_size);
  const std::vector<TensorSpec> specs = tensor_specs(c, label, hint);
  std::vector<std::uint64_t> offsets;  // in floats from the end of the header
  std::uint64_t end = 0;
  const std::uint64_t floats_in_file = (file_size - kHeaderBytes) / sizeof(float);
  for (const TensorSpec& t : specs) {
    offsets.push_back(end);
    if (__builtin_add_overflow(end, t.n_floats, &end) || end > floats_in_file) {
      throw FormatError(label + ": truncated or header mismatch: tensor '" + std::string(t.name) +
                        "' needs bytes [" + std::to_string(kHeaderBytes + offsets.back() * 4) + ", " +
                        std::to_string(kHeaderBytes + (offsets.back() + t.n_floats) * 4) +
                        ") but the file has " + std::to_string(file_size) + " bytes" + hint);
    }
  }
  const std::uint64_t expected = kHeaderBytes + end * sizeof(float);
  if (file_size != expected) {
    throw FormatError(label + ": " + std::to_string(file_size - expected) +
                      " unexpected trailing bytes after tensor '" + std::string(specs.back().name) +
                      "' (header vocab_size sign or dimensions do not match the weights)");
  }

  ck->data_.resize(static_cast<std::size_t>(end));
  in.read(reinterpret_cast<char*>(ck->data_.data()), static_cast<std::streamsize>(end * sizeof(float)));
  if (static_cast<std::uint64_t>(in.gcount()) != end * sizeof(float)) {
    throw FormatError(label + ": short read of the weights (file changed while loading?)");
  }

  // Garbled weights (NaN, inf) would silently poison every logit; name the tensor instead.
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const float* p = ck->data_.data() + offsets[i];
    for (std::uint64_t j = 0; j < specs[i].n_floats; ++j) {
      if (!std::isfinite(p[j])) {
        throw FormatError(label + ": tensor '" + std::string(specs[i].name) +
                          "' has a non-finite value at element " + std::to_string(j));
      }
    }
  }

  const std::span<const float> all(ck->data_);
  auto tensor = [&](std::size_t i) { return all.subspan(offsets[i], specs[i].n_floats); };
  ck->token_embedding_ = tensor(0);
  ck->rms_final_ = tensor(10);
  ck->classifier_ = c.shared_classifier ? ck->token_embedding_ : tensor(13);
  ck->layers_.resize(c.n_layers);
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    auto slice = [&](std::size_t i) {
      const std::size_t per_layer = specs[i].n_floats / c.n_layers;
      return tensor(i).subspan(il * per_layer, per_layer);
    };
    ck->layers_[il] = {slice(1), slice(2), slice(3), slice(4), slice(5),
                       slice(6), slice(7), slice(8), slice(9)};
  }
  return ck;
}

const CheckpointLayer& Checkpoint::layer(std::uint32_t il) const {
  assert(il < layers_.size());
  return layers_[il];
}

namespace {

WeightMatrix f32_matrix(std::span<const float> data, std::uint32_t rows, std::uint32_t cols) {
  assert(data.size() == std::size_t{rows} * cols);
  return WeightMatrix{GgmlType::f32, rows, cols, reinterpret_cast<const std::byte*>(data.data()),
                      std::size_t{cols} * sizeof(float)};
}

}  // namespace

std::shared_ptr<const ModelWeights> checkpoint_weights(std::shared_ptr<const Checkpoint> checkpoint) {
  const Checkpoint& ck = *checkpoint;
  const ModelConfig& c = ck.config();
  auto m = std::make_shared<ModelWeights>();
  m->config = c;
  m->path = ck.path();
  m->format = "llama2.c";
  m->token_embedding = f32_matrix(ck.token_embedding(), c.vocab_size, c.dim);
  m->output = f32_matrix(ck.classifier(), c.vocab_size, c.dim);
  m->output_norm = ck.rms_final();
  const std::uint32_t d = c.dim, kv = c.kv_dim(), h = c.hidden_dim;
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    const CheckpointLayer& l = ck.layer(il);
    LayerWeights w;
    w.attn_norm = l.rms_att;
    w.wq = f32_matrix(l.wq, d, d);
    w.wk = f32_matrix(l.wk, kv, d);
    w.wv = f32_matrix(l.wv, kv, d);
    w.wo = f32_matrix(l.wo, d, d);
    w.ffn_norm = l.rms_ffn;
    w.ffn_gate = f32_matrix(l.w1, h, d);
    w.ffn_up = f32_matrix(l.w3, h, d);
    w.ffn_down = f32_matrix(l.w2, d, h);
    m->layers.push_back(w);
  }
  // Embedding, 9 per layer, final norm, and a separate classifier when there is one.
  m->tensor_types[GgmlType::f32] = 9 * c.n_layers + 2 + (c.shared_classifier ? 0 : 1);
  m->storage = std::move(checkpoint);
  return m;
}

}  // namespace kvcache::llama
