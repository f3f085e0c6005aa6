// Fuzzes the llama2.c checkpoint loader (integrations/llama/checkpoint.h) with arbitrary files.
//
// Contract under test: Checkpoint::load either throws kvcache::Error (FormatError for a bad
// file) or returns a checkpoint whose tensors are exactly the sizes its header implies and lie
// inside the data it read. Any other exception, crash, leak or sanitizer report is a finding.
#include <cmath>
#include <cstdint>
#include <span>

#include "fuzz_support.h"
#include "kvcache/error.h"
#include "llama/checkpoint.h"

namespace {

// Reads every float of `s` (so ASan checks the span really lies in live memory) and checks they
// are finite, which load() promises.
void touch(std::span<const float> s) {
  for (float x : s) FUZZ_CHECK(std::isfinite(x));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A valid header can describe gigabytes; the loader checks sizes against the file length before
  // allocating, so the input size alone bounds the work. Cap it to keep one run in milliseconds.
  if (size > (std::size_t{1} << 20)) return 0;
  static kvcache::fuzz::MemFile file;
  file.write({data, size});
  std::shared_ptr<const kvcache::llama::Checkpoint> ck;
  try {
    ck = kvcache::llama::Checkpoint::load(file.path());
  } catch (const kvcache::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  const kvcache::llama::ModelConfig& c = ck->config();
  FUZZ_CHECK(c.dim > 0 && c.hidden_dim > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0);
  FUZZ_CHECK(c.dim % c.n_heads == 0 && c.n_heads % c.n_kv_heads == 0 && c.head_dim() % 2 == 0);
  FUZZ_CHECK(c.vocab_size >= 259);
  const std::size_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim(), V = c.vocab_size;
  FUZZ_CHECK(ck->token_embedding().size() == V * d);
  FUZZ_CHECK(ck->classifier().size() == V * d);
  FUZZ_CHECK(ck->rms_final().size() == d);
  touch(ck->token_embedding());
  touch(ck->classifier());
  touch(ck->rms_final());
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    const kvcache::llama::CheckpointLayer& w = ck->layer(il);
    FUZZ_CHECK(w.rms_att.size() == d && w.rms_ffn.size() == d);
    FUZZ_CHECK(w.wq.size() == d * d && w.wo.size() == d * d);
    FUZZ_CHECK(w.wk.size() == kv * d && w.wv.size() == kv * d);
    FUZZ_CHECK(w.w1.size() == h * d && w.w2.size() == d * h && w.w3.size() == h * d);
    for (auto s : {w.rms_att, w.wq, w.wk, w.wv, w.wo, w.rms_ffn, w.w1, w.w2, w.w3}) touch(s);
  }
  // The file is header + weights, nothing more, nothing less.
  FUZZ_CHECK(ck->weight_bytes() + 7 * sizeof(std::int32_t) == size);
  return 0;
}
