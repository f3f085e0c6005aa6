#include "llama/gguf_model.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "kvcache/error.h"
#include "llama/binary_io.h"
#include "llama/ggml_quant.h"

namespace kvcache::llama {
namespace {

std::string shape_string(std::span<const std::uint64_t> dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Reads one file's keys and tensors into a ModelWeights, with every message prefixed by the file.
class Loader {
 public:
  explicit Loader(std::shared_ptr<const GgufFile> file) : file_(std::move(file)), label_(file_->label()) {}

  std::shared_ptr<const ModelWeights> load() {
    auto m = std::make_shared<ModelWeights>();
    m->path = file_->path();
    m->format = "gguf";
    m->config = read_config();
    const ModelConfig& c = m->config;
    const std::uint64_t d = c.dim, kv = c.kv_dim(), h = c.hidden_dim, V = c.vocab_size;

    m->token_embedding = matrix(*m, "token_embd.weight", d, V, "embedding_length x vocab_size");
    m->output_norm = vector(*m, "output_norm.weight", d, "embedding_length");
    if (file_->find_tensor("output.weight") != nullptr) {
      m->output = matrix(*m, "output.weight", d, V, "embedding_length x vocab_size");
      m->config.shared_classifier = false;
    } else {
      m->output = m->token_embedding;
      m->config.shared_classifier = true;
    }
    if (file_->find_tensor("rope_freqs.weight") != nullptr) {
      const std::span<const float> f = vector(*m, "rope_freqs.weight", c.head_dim() / 2, "head size / 2");
      for (float v : f) {
        if (!(v > 0.f) || !std::isfinite(v))
          fail("tensor 'rope_freqs.weight' has a frequency factor " + std::to_string(v) +
               " (must be finite, > 0)");
      }
      m->config.rope.freq_factors.assign(f.begin(), f.end());
    }
    const bool biases_required = c.arch == Architecture::qwen2;
    for (std::uint32_t il = 0; il < c.n_layers; ++il) {
      const std::string b = "blk." + std::to_string(il) + ".";
      LayerWeights w;
      w.attn_norm = vector(*m, b + "attn_norm.weight", d, "embedding_length");
      w.wq = matrix(*m, b + "attn_q.weight", d, d, "embedding_length x embedding_length");
      w.wk = matrix(*m, b + "attn_k.weight", d, kv, "embedding_length x head size * head_count_kv");
      w.wv = matrix(*m, b + "attn_v.weight", d, kv, "embedding_length x head size * head_count_kv");
      w.wo = matrix(*m, b + "attn_output.weight", d, d, "embedding_length x embedding_length");
      const bool has_bias = biases_required || file_->find_tensor(b + "attn_q.bias") != nullptr ||
                            file_->find_tensor(b + "attn_k.bias") != nullptr ||
                            file_->find_tensor(b + "attn_v.bias") != nullptr;
      if (has_bias) {
        w.bq = vector(*m, b + "attn_q.bias", d, "embedding_length");
        w.bk = vector(*m, b + "attn_k.bias", kv, "head size * head_count_kv");
        w.bv = vector(*m, b + "attn_v.bias", kv, "head size * head_count_kv");
      }
      w.ffn_norm = vector(*m, b + "ffn_norm.weight", d, "embedding_length");
      w.ffn_gate = matrix(*m, b + "ffn_gate.weight", d, h, "embedding_length x feed_forward_length");
      w.ffn_up = matrix(*m, b + "ffn_up.weight", d, h, "embedding_length x feed_forward_length");
      w.ffn_down = matrix(*m, b + "ffn_down.weight", h, d, "feed_forward_length x embedding_length");
      m->layers.push_back(w);
    }
    for (const GgufTensor& t : file_->tensors()) ++m->tensor_types[t.type];
    m->storage = file_;
    return m;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { throw FormatError(label_ + ": " + message); }

  std::string key(std::string_view name) const { return arch_ + "." + std::string(name); }

  // A required count: present, an integer, > 0 and below 2^31 (sizes are multiplied later).
  std::uint32_t count(std::string_view name) const {
    const std::string k = key(name);
    const std::optional<std::uint64_t> v = file_->get_uint(k);
    if (!v) fail("missing key '" + k + "'");
    if (*v == 0 || *v > (std::uint64_t{1} << 31))
      fail("key '" + k + "' = " + std::to_string(*v) + " is out of range (1 .. 2^31)");
    return static_cast<std::uint32_t>(*v);
  }

  ModelConfig read_config() {
    ModelConfig c;
    const std::string arch = file_->require_string("general.architecture");
    if (arch == "llama") {
      c.arch = Architecture::llama;
      c.rope.style = RopeStyle::adjacent_pairs;  // llama.cpp LLAMA_ROPE_TYPE_NORM
    } else if (arch == "qwen2") {
      c.arch = Architecture::qwen2;
      c.rope.style = RopeStyle::half_split;  // llama.cpp LLAMA_ROPE_TYPE_NEOX
    } else {
      fail("general.architecture '" + arch +
           "' is not supported (supported: " + std::string(supported_architectures()) + ")");
    }
    arch_ = arch;
    c.n_layers = count("block_count");
    c.dim = count("embedding_length");
    c.hidden_dim = count("feed_forward_length");
    c.n_heads = count("attention.head_count");
    c.n_kv_heads = file_->has(key("attention.head_count_kv")) ? count("attention.head_count_kv") : c.n_heads;
    c.seq_len = count("context_length");
    if (c.dim % c.n_heads != 0) {
      fail("key '" + key("attention.head_count") + "' = " + std::to_string(c.n_heads) + " does not divide '" +
           key("embedding_length") + "' = " + std::to_string(c.dim));
    }
    if (c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads != 0) {
      fail("key '" + key("attention.head_count") + "' = " + std::to_string(c.n_heads) +
           " is not a multiple of '" + key("attention.head_count_kv") +
           "' = " + std::to_string(c.n_kv_heads));
    }
    if (c.head_dim() % 2 != 0) {
      fail("head size " + std::to_string(c.head_dim()) +
           " (embedding_length / head_count) is odd; RoPE rotates pairs");
    }
    if (file_->has(key("rope.dimension_count"))) {
      const std::uint32_t n_rot = count("rope.dimension_count");
      if (n_rot != c.head_dim()) {
        fail("key '" + key("rope.dimension_count") + "' = " + std::to_string(n_rot) +
             " differs from the head size " + std::to_string(c.head_dim()) +
             ": partial rotary embeddings are not supported");
      }
    }
    if (const std::optional<double> theta = file_->get_float(key("rope.freq_base"))) {
      if (!(*theta > 1.0) || !std::isfinite(*theta))
        fail("key '" + key("rope.freq_base") + "' = " + std::to_string(*theta) + " must be finite and > 1");
      c.rope.theta = *theta;
    }
    const std::optional<double> eps = file_->get_float(key("attention.layer_norm_rms_epsilon"));
    if (!eps) fail("missing key '" + key("attention.layer_norm_rms_epsilon") + "'");
    if (!(*eps > 0.0) || !(*eps < 1.0))
      fail("key '" + key("attention.layer_norm_rms_epsilon") + "' = " + std::to_string(*eps) +
           " is not in (0, 1)");
    c.rms_eps = static_cast<float>(*eps);

    if (file_->has(key("vocab_size"))) {
      c.vocab_size = count("vocab_size");
    } else if (const auto tokens = file_->get_string_array("tokenizer.ggml.tokens")) {
      if (tokens->empty() || tokens->size() > (std::size_t{1} << 31))
        fail("key 'tokenizer.ggml.tokens' holds " + std::to_string(tokens->size()) + " tokens");
      c.vocab_size = static_cast<std::uint32_t>(tokens->size());
    } else if (const GgufTensor* emb = file_->find_tensor("token_embd.weight");
               emb != nullptr && emb->dims.size() == 2) {
      if (emb->dims[1] == 0 || emb->dims[1] > (std::uint64_t{1} << 31))
        fail("tensor 'token_embd.weight' has " + std::to_string(emb->dims[1]) + " rows");
      c.vocab_size = static_cast<std::uint32_t>(emb->dims[1]);
    } else {
      fail("no vocabulary size: none of '" + key("vocab_size") +
           "', 'tokenizer.ggml.tokens' or a 2-D 'token_embd.weight'");
    }
    return c;
  }

  // The tensor `name` with the dims `want` (ne order; trailing 1s of the file are ignored).
  const GgufTensor& tensor(const std::string& name, std::initializer_list<std::uint64_t> want,
                           const char* meaning) const {
    const GgufTensor* t = file_->find_tensor(name);
    if (t == nullptr) fail("missing tensor '" + name + "'");
    std::vector<std::uint64_t> dims = t->dims;
    while (dims.size() > want.size() && dims.back() == 1) dims.pop_back();
    if (!std::equal(dims.begin(), dims.end(), want.begin(), want.end())) {
      fail("tensor '" + name + "' has shape " + shape_string(t->dims) + ", expected " +
           shape_string(std::vector<std::uint64_t>(want)) + " (" + meaning + ")");
    }
    return *t;
  }

  WeightMatrix matrix(ModelWeights&, const std::string& name, std::uint64_t cols, std::uint64_t rows,
                      const char* meaning) const {
    const GgufTensor& t = tensor(name, {cols, rows}, meaning);
    if (!ggml_row_bytes(t.type, cols)) {
      fail("tensor '" + name + "' of type " + std::string(ggml_type_name(t.type)) + " has rows of " +
           std::to_string(cols) + " elements, not a multiple of its block size " +
           std::to_string(ggml_block_elems(t.type)));
    }
    return t.matrix();
  }

  // A 1-D tensor converted to f32 into storage the model owns.
  std::span<const float> vector(ModelWeights& m, const std::string& name, std::uint64_t n,
                                const char* meaning) const {
    const GgufTensor& t = tensor(name, {n}, meaning);
    if (!ggml_row_bytes(t.type, n)) {
      fail("tensor '" + name + "' of type " + std::string(ggml_type_name(t.type)) + " has " +
           std::to_string(n) + " elements, not a multiple of its block size");
    }
    std::vector<float>& out = m.owned.emplace_back(static_cast<std::size_t>(n));
    dequantize_row(t.type, t.data.data(), out);
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (!std::isfinite(out[i]))
        fail("tensor '" + name + "' has a non-finite value at element " + std::to_string(i));
    }
    return out;
  }

  std::shared_ptr<const GgufFile> file_;
  std::string label_;
  std::string arch_;
};

}  // namespace

std::shared_ptr<const ModelWeights> load_gguf_model(std::shared_ptr<const GgufFile> file) {
  return Loader(std::move(file)).load();
}

}  // namespace kvcache::llama
