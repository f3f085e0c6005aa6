// Checkpoint loading: the real model, and hostile variants of it that must each be rejected with
// a FormatError naming the file and the offending field (never a crash: run under ASan/UBSan).
#include "llama/checkpoint.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "contains.h"
#include "kvcache/error.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

constexpr const char* kFields[] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};

// The FormatError message for loading `bytes` from a temp file, which it must name.
std::string checkpoint_error(const std::vector<std::byte>& bytes) {
  TempFile f("ckpt", bytes);
  return format_error_of(f, [&] { Checkpoint::load(f.path()); });
}

std::vector<std::byte> truncated(std::vector<std::byte> b, std::size_t n) {
  b.resize(n);
  return b;
}

}  // namespace

TEST_CASE("checkpoint: stories260K loads with the documented shape") {
  const auto ck = Checkpoint::load(model_path());
  const ModelConfig& c = ck->config();
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.seq_len == 512);
  CHECK(c.shared_classifier);
  CHECK(c.head_dim() == 8);
  CHECK(ck->classifier().data() == ck->token_embedding().data());
  CHECK(ck->layer(4).w2.size() == 64u * 172u);
}

TEST_CASE("checkpoint: missing file is an Error naming it") {
  const auto p = std::filesystem::temp_directory_path() / "kvcache_llama_no_such_checkpoint.bin";
  try {
    Checkpoint::load(p);
    FAIL("loaded a missing file");
  } catch (const Error& e) {
    CHECK(contains(e.what(), p.string()));
  }
}

TEST_CASE("checkpoint: truncated at every header field boundary names the missing field") {
  const auto good = read_bytes(model_path());
  for (std::size_t field = 0; field < 7; ++field) {
    for (std::size_t extra : {0u, 2u}) {
      const std::string msg = checkpoint_error(truncated(good, field * 4 + extra));
      CAPTURE(msg);
      CHECK(contains(msg, std::string("'") + kFields[field] + "'"));
      CHECK(contains(msg, "truncated"));
    }
  }
  const std::string msg = checkpoint_error(truncated(good, 28));
  CAPTURE(msg);
  CHECK(contains(msg, "'token_embedding'"));
}

TEST_CASE("checkpoint: truncated inside the weights names the tensor") {
  const auto good = read_bytes(model_path());
  // Float offsets of tensors in stories260K (see checkpoint.h for the order).
  const std::size_t emb = 512 * 64, rms = 5 * 64, wq = 5 * 64 * 64, wk = 5 * 64 * 32, w1 = 5 * 64 * 172;
  struct Cut {
    std::size_t floats;
    const char* tensor;
  };
  const Cut cuts[] = {
      {1, "token_embedding"},
      {emb + 1, "rms_att_weight"},
      {emb + rms + wq / 2, "wq"},
      {emb + rms + wq + wk + 7, "wv"},
      {emb + rms + 2 * wq + 2 * wk + rms + w1 + 100, "w2"},
  };
  for (const Cut& c : cuts) {
    const std::string msg = checkpoint_error(truncated(good, 28 + 4 * c.floats + 1));
    CAPTURE(msg);
    CHECK(contains(msg, std::string("'") + c.tensor + "'"));
  }
  const std::string last = checkpoint_error(truncated(good, good.size() - 1));
  CAPTURE(last);
  CHECK(contains(last, "'freq_cis_imag'"));
}

TEST_CASE("checkpoint: trailing bytes are rejected") {
  auto b = read_bytes(model_path());
  b.resize(b.size() + 8);
  const std::string msg = checkpoint_error(b);
  CHECK(contains(msg, "trailing"));
}

TEST_CASE("checkpoint: zero, negative and huge dimensions name the field") {
  const auto good = read_bytes(model_path());
  const std::int32_t values[] = {
      0, -1, -7, std::numeric_limits<std::int32_t>::max(), 1 << 24, std::numeric_limits<std::int32_t>::min()};
  for (std::size_t field = 0; field < 7; ++field) {
    for (std::int32_t v : values) {
      auto b = good;
      put_i32(b, field * 4, v);
      const std::string msg = checkpoint_error(b);
      CAPTURE(msg);
      CAPTURE(v);
      CHECK(contains(msg, kFields[field]));
    }
  }
}

TEST_CASE("checkpoint: negative vocab_size expects a separate classifier that is missing") {
  auto b = read_bytes(model_path());
  put_i32(b, 20, -512);
  const std::string msg = checkpoint_error(b);
  CHECK(contains(msg, "'wcls'"));
}

TEST_CASE("checkpoint: a separate classifier is loaded when present") {
  auto b = read_bytes(model_path());
  put_i32(b, 20, -512);
  const std::size_t before = b.size();
  b.resize(before + 512 * 64 * 4);
  for (std::size_t i = 0; i < 512 * 64; ++i) put_f32(b, before + 4 * i, 0.5f);
  TempFile f("ckpt_wcls", b);
  const auto ck = Checkpoint::load(f.path());
  CHECK_FALSE(ck->config().shared_classifier);
  CHECK(ck->classifier().data() != ck->token_embedding().data());
  CHECK(ck->classifier()[12345] == 0.5f);
}

TEST_CASE("checkpoint: inconsistent head layout names the fields") {
  const auto good = read_bytes(model_path());
  {
    auto b = good;
    put_i32(b, 16, 3);  // n_kv_heads 3 does not divide n_heads 8
    CHECK(contains(checkpoint_error(b), "n_kv_heads"));
  }
  {
    auto b = good;
    put_i32(b, 16, 16);  // more KV heads than query heads
    CHECK(contains(checkpoint_error(b), "n_kv_heads"));
  }
  {
    auto b = good;
    put_i32(b, 12, 64);  // head size 64 / 64 = 1 is odd
    const std::string msg = checkpoint_error(b);
    CHECK(contains(msg, "odd"));
    CHECK(contains(msg, "n_heads"));
  }
  {
    auto b = good;
    put_i32(b, 12, 7);  // dim 64 not a multiple of 7 heads
    CHECK(contains(checkpoint_error(b), "n_heads"));
  }
  {
    auto b = good;
    put_i32(b, 0, 32);  // plausible but wrong dim: sizes no longer match the file
    const std::string msg = checkpoint_error(b);
    CHECK((contains(msg, "trailing") || contains(msg, "truncated")));
  }
}

TEST_CASE("checkpoint: non-finite weights name the tensor") {
  auto b = read_bytes(model_path());
  put_f32(b, 28 + 4 * (512 * 64 + 3), std::numeric_limits<float>::quiet_NaN());
  const std::string msg = checkpoint_error(b);
  CHECK(contains(msg, "'rms_att_weight'"));
  CHECK(contains(msg, "non-finite"));
}

}  // namespace kvcache::llama::test
