// The Highway attention kernel equals its scalar twin on every target compiled into the binary,
// and the SIMD attend() equals attend_reference() over a real StreamCache.
#include <doctest/doctest.h>
#include <hwy/targets.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/attention/kernel.h"
#include "kvcache/error.h"
#include "kvcache/quant.h"
#include "tests/test_support.h"

using namespace kvcache;

namespace {

// Tolerance for f32 arithmetic against the double-precision twin, on outputs and probabilities.
// Inputs are in [-1, 1] and the scale is 1/sqrt(head_dim), so logits are O(1) and every output
// is a convex combination of values in [-1, 1]. The kernel's error is dominated by the f32 dot
// products (at most ~head_dim * 2^-24 relative to sum |q_i k_i|, a few 1e-6 at head_dim 130 in
// the worst case, ~1e-7 typically) and the 1-ULP Exp; a logit error e perturbs each probability
// by a factor exp(e), so outputs and probabilities move by a few 1e-6 at most. 2e-5 leaves
// margin without hiding real bugs (a dropped row or a missed rescale moves results by >= 1e-3).
// f16 rows are widened exactly by both implementations, so the same bound applies. Quantised rows
// are dequantised differently (the scalar twin builds each f32 value, the kernel folds scales into
// the query or the probability and q4 zero points into a bias), which reorders f32 roundings of
// O(1) terms: the same bound covers them.
constexpr double kTol = 2e-5;

// K, V and per-block queries for one kernel call, with rows deliberately not 16-byte aligned.
// Each block is encoded as a page would hold it (kvcache/quant.h): q4 keys per channel over the
// block's rows, everything else per row.
struct Problem {
  std::uint32_t head_dim = 0, n_group = 0;
  float scale = 0.f;
  std::vector<std::vector<std::byte>> storage;  // per block: padding, K, V, K params, V params
  std::vector<std::vector<float>> queries;      // per block: n_group x head_dim
  std::vector<kernels::HeadBlock> blocks;
  std::size_t rows = 0;
};

// Encodes n rows of head_dim floats (`x`, keys when is_key) as `dtype` codes and parameters.
void encode(DType dtype, bool is_key, std::uint32_t head_dim, std::uint32_t n, const std::vector<float>& x,
            std::vector<std::byte>& codes, std::vector<std::byte>& params) {
  const std::size_t row_bytes = std::size_t{head_dim} * dtype_bits(dtype) / 8;
  codes.assign(std::size_t{n} * row_bytes, std::byte{0});
  params.clear();
  auto put_half = [&](std::uint16_t h) {
    params.push_back(static_cast<std::byte>(h & 0xff));
    params.push_back(static_cast<std::byte>(h >> 8));
  };
  if (dtype == DType::q4 && is_key) {
    if (n == 0) return;
    std::vector<std::uint16_t> sz(2 * std::size_t{head_dim});
    quant::q4_quantize_channels(x.data(), n, head_dim, sz.data(), sz.data() + head_dim,
                                reinterpret_cast<std::uint8_t*>(codes.data()));
    for (std::uint16_t h : sz) put_half(h);
    return;
  }
  for (std::uint32_t r = 0; r < n; ++r) {
    const std::span<const float> row(x.data() + std::size_t{r} * head_dim, head_dim);
    std::byte* dst = codes.data() + r * row_bytes;
    if (dtype == DType::f32) {
      std::memcpy(dst, row.data(), row_bytes);
    } else if (dtype == DType::f16) {
      for (std::uint32_t i = 0; i < head_dim; ++i) {
        const std::uint16_t h = f16_from_f32(row[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    } else if (dtype == DType::q8) {
      put_half(quant::q8_quantize(row, reinterpret_cast<std::int8_t*>(dst)));
    } else {
      const quant::Q4Params qp = quant::q4_quantize_row(row, reinterpret_cast<std::uint8_t*>(dst));
      put_half(qp.scale);
      put_half(qp.zero);
    }
  }
}

// `grid`: draw values from multiples of 1/16 in [-4, 4] (exact in f16 and in f32 dot products),
// used with a power-of-two scale to create logits in the thousands whose exact value both sides
// agree on: a naive softmax overflows there, and any rounding of the logit would be amplified.
// Block b is stored as dtypes[b % dtypes.size()].
Problem make_problem(const std::vector<DType>& dtypes, std::uint32_t head_dim, std::uint32_t n_group,
                     const std::vector<std::uint32_t>& split, bool grid, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::uniform_int_distribution<int> steps(-64, 64);
  auto draw = [&] { return grid ? static_cast<float>(steps(rng)) / 16.f : uni(rng); };

  Problem p;
  p.head_dim = head_dim;
  p.n_group = n_group;
  p.scale = grid ? 16.f : 1.f / std::sqrt(static_cast<float>(head_dim));
  std::vector<std::array<std::size_t, 4>> offsets;  // K, V, K params, V params in each buffer
  for (std::size_t b = 0; b < split.size(); ++b) {
    const DType dtype = dtypes[b % dtypes.size()];
    const std::uint32_t n = split[b];
    std::vector<float> k(std::size_t{n} * head_dim), v(k.size());
    for (float& x : k) x = draw();
    for (float& x : v) x = draw();
    std::vector<std::byte> kc, kp, vc, vp;
    encode(dtype, true, head_dim, n, k, kc, kp);
    encode(dtype, false, head_dim, n, v, vc, vp);
    // Each part starts 4 bytes past a multiple of 4: element-aligned as rows in a page are (pages
    // are 64-byte aligned and rows sit at multiples of their element size), never 16-aligned.
    std::vector<std::byte> buf(4);
    std::array<std::size_t, 4> off{};
    for (int part = 0; part < 4; ++part) {
      const std::vector<std::byte>& src = part == 0 ? kc : part == 1 ? vc : part == 2 ? kp : vp;
      std::size_t at = (buf.size() + 3) / 4 * 4;
      if (at % 16 == 0) at += 4;
      buf.resize(at);
      off[part] = buf.size();
      buf.insert(buf.end(), src.begin(), src.end());
    }
    std::vector<float> q(std::size_t{n_group} * head_dim);
    for (float& x : q) x = draw();
    p.storage.push_back(std::move(buf));
    p.queries.push_back(std::move(q));
    offsets.push_back(off);
    p.rows += n;
  }
  for (std::size_t b = 0; b < split.size(); ++b) {
    const DType dtype = dtypes[b % dtypes.size()];
    const std::byte* base = p.storage[b].data();
    const bool quantized = is_quantized(dtype);
    p.blocks.push_back({dtype, base + offsets[b][0], base + offsets[b][1],
                        quantized ? base + offsets[b][2] : nullptr,
                        quantized ? base + offsets[b][3] : nullptr, split[b], p.queries[b].data()});
  }
  return p;
}

struct Diff {
  double out = 0, mass = 0;
  bool mass_padding_intact = true;
};

// Runs both kernels on `p` and returns the largest differences.
Diff compare(const Problem& p, bool with_mass) {
  const std::size_t stride = p.rows + 3;  // padding after each head's row must stay untouched
  const float sentinel = -7.f;
  std::vector<float> out_s(std::size_t{p.n_group} * p.head_dim), out_v(out_s.size(), 123.f);
  std::vector<float> mass_s(p.n_group * stride, sentinel), mass_v(mass_s.size(), sentinel);
  kernels::attend_group_scalar(p.head_dim, p.n_group, p.scale, p.blocks, out_s.data(),
                               with_mass ? mass_s.data() : nullptr, stride);
  kernels::attend_group(p.head_dim, p.n_group, p.scale, p.blocks, out_v.data(),
                        with_mass ? mass_v.data() : nullptr, stride);
  Diff d;
  for (std::size_t i = 0; i < out_s.size(); ++i) {
    d.out = std::max(d.out, std::abs(double{out_s[i]} - out_v[i]));
    if (!std::isfinite(out_v[i])) d.out = INFINITY;
  }
  for (std::size_t g = 0; g < p.n_group; ++g) {
    for (std::size_t j = 0; j < stride; ++j) {
      const float s = mass_s[g * stride + j], v = mass_v[g * stride + j];
      if (j >= p.rows || !with_mass) {
        d.mass_padding_intact = d.mass_padding_intact && v == sentinel;
      } else {
        d.mass = std::max(d.mass, std::abs(double{s} - v));
        if (!std::isfinite(v)) d.mass = INFINITY;
      }
    }
  }
  return d;
}

// Block splits: single rows, pages, empty blocks, blocks longer than the kernel's chunk.
const std::vector<std::vector<std::uint32_t>> kSplits = {
    {1},
    {1, 1, 1, 1, 1},
    {16, 16, 16, 7},
    {3, 0, 1, 64, 130, 2},
    {5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
     1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
     1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9},
    {300},
};

// Every dtype alone, and mixes of them within one call (a pinned region at another precision).
const std::vector<std::vector<DType>> kDTypeSets = {{DType::f32},
                                                    {DType::f16},
                                                    {DType::q8},
                                                    {DType::q4},
                                                    {DType::f16, DType::q4},
                                                    {DType::q8, DType::f32, DType::q4}};

bool supports(const std::vector<DType>& dtypes, std::uint32_t head_dim) {
  return head_dim % 2 == 0 || std::find(dtypes.begin(), dtypes.end(), DType::q4) == dtypes.end();
}

std::string names(const std::vector<DType>& dtypes) {
  std::string n;
  for (DType dt : dtypes) n += std::string(n.empty() ? "" : "+") + std::string(dtype_name(dt));
  return n;
}

// Calls `body` once per target compiled into the binary and supported by this CPU, with
// dynamic dispatch forced to that target (Highway's per-target test pattern without gtest).
template <class Body>
void for_each_target(Body&& body) {
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string target_name = hwy::TargetName(target);
    CAPTURE(target_name);
    body(target_name);
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace

TEST_CASE("attend_group equals the scalar twin on every target (random data)") {
  int targets = 0;
  for_each_target([&](const std::string& target_name) {
    ++targets;
    double worst_out = 0, worst_mass = 0;
    std::uint32_t seed = 1;
    for (const std::vector<DType>& dtypes : kDTypeSets) {
      for (std::uint32_t head_dim : {1u, 2u, 3u, 4u, 7u, 8u, 16u, 64u, 128u, 130u}) {
        if (!supports(dtypes, head_dim)) continue;
        for (std::uint32_t n_group : {1u, 2u, 4u, 8u}) {
          for (std::size_t si = 0; si < kSplits.size(); ++si) {
            CAPTURE(names(dtypes));
            CAPTURE(head_dim);
            CAPTURE(n_group);
            CAPTURE(si);
            const Problem p = make_problem(dtypes, head_dim, n_group, kSplits[si], false, seed++);
            for (bool with_mass : {false, true}) {
              CAPTURE(with_mass);
              const Diff d = compare(p, with_mass);
              CHECK(d.out < kTol);
              CHECK(d.mass < kTol);
              CHECK(d.mass_padding_intact);
              worst_out = std::max(worst_out, d.out);
              worst_mass = std::max(worst_mass, d.mass);
            }
          }
        }
      }
    }
    MESSAGE(target_name << ": max abs diff vs scalar twin: out " << worst_out << ", mass " << worst_mass);
  });
  CHECK(targets >= 1);
}

TEST_CASE("attend_group stays stable with logits in the thousands on every target") {
  for_each_target([](const std::string&) {
    std::uint32_t seed = 1000;
    for (const std::vector<DType>& dtypes : kDTypeSets) {
      for (std::uint32_t head_dim : {1u, 2u, 4u, 7u, 8u, 64u, 130u}) {
        if (!supports(dtypes, head_dim)) continue;
        for (std::uint32_t n_group : {1u, 4u}) {
          for (std::size_t si : {std::size_t{1}, std::size_t{3}, std::size_t{5}}) {
            CAPTURE(names(dtypes));
            CAPTURE(head_dim);
            CAPTURE(n_group);
            CAPTURE(si);
            const Problem p = make_problem(dtypes, head_dim, n_group, kSplits[si], true, seed++);
            const Diff d = compare(p, true);
            CHECK(d.out < kTol);
            CHECK(d.mass < kTol);
          }
        }
      }
    }
  });
}

TEST_CASE("attend_group: later, larger logits take over (rescaling of earlier rows)") {
  // Row j has logit j / 2, in single-row blocks and then a long block, so the running max rises
  // at every chunk and the accumulator is rescaled each time; mass ends up on the last rows.
  for_each_target([](const std::string&) {
    const std::uint32_t d = 4;
    std::vector<std::uint32_t> split(100, 1);
    split.push_back(64);
    split.push_back(1);
    Problem p = make_problem({DType::f32}, d, 2, split, false, 7);
    p.scale = 1.f;
    for (std::size_t b = 0, j = 0; b < p.blocks.size(); ++b) {
      float* q = p.queries[b].data();
      std::fill(q, q + 2 * d, 0.f);
      q[0] = 1.f;
      q[d] = 1.f;
      for (std::uint32_t r = 0; r < p.blocks[b].n; ++r, ++j) {
        const float k0 = 0.5f * static_cast<float>(j);
        std::memcpy(p.storage[b].data() + 1 + std::size_t{r} * d * 4, &k0,
                    4);  // K starts after 1 pad byte
      }
    }
    const Diff diff = compare(p, true);
    CHECK(diff.out < kTol);
    CHECK(diff.mass < kTol);
  });
}

TEST_CASE("attend() equals attend_reference() over a StreamCache") {
  // GQA, every dtype and a mixed-precision cache, RoPE on, a sink + window policy so pinned and
  // window spans rotate by different deltas, page sizes that split the context at different
  // places, and an explicit query_index in the middle of the cache.
  const std::pair<DType, DType> kRegions[] = {{DType::f32, DType::f32}, {DType::f16, DType::f16},
                                              {DType::q8, DType::q8},   {DType::q4, DType::q4},
                                              {DType::q4, DType::f16},  {DType::q8, DType::f32}};
  for (const auto& [dtype, pinned] : kRegions) {
    for (std::uint32_t page_tokens : {1u, 16u}) {
      for (std::uint32_t head_dim : {8u, 64u}) {
        CAPTURE(dtype_name(dtype));
        CAPTURE(dtype_name(pinned));
        CAPTURE(page_tokens);
        CAPTURE(head_dim);
        StreamConfig c{
            2, 2, head_dim, page_tokens, dtype, PositionMode::reindexed, {}, PolicyConfig::streaming(4, 45)};
        c.pinned_dtype = pinned;
        if (c.pinned_layout().page_tokens == 0) continue;  // an f32 token does not fit a 1-token q8 page
        StreamCache s(kvtest::make_pool(c, 512), c);
        const std::uint32_t n_heads = 8;
        double worst = 0;
        for (int t = 0; t < 70; ++t) {
          kvtest::push_token(s);
          if (t % 9 != 8) continue;
          for (std::uint32_t il = 0; il < c.n_layers; ++il) {
            std::vector<float> q(std::size_t{n_heads} * head_dim);
            for (std::size_t i = 0; i < q.size(); ++i) q[i] = 2.f * kvtest::synth(5, il, t, i, 0);
            for (std::int64_t qi : {std::int64_t{-1}, std::int64_t{s.n_kept() / 2}}) {
              AttendOptions o{n_heads};
              o.query_index = qi;
              std::vector<float> out_r(q.size()), out_s(q.size());
              std::vector<float> mass_r(std::size_t{n_heads} * s.n_kept()), mass_s(mass_r.size(), 5.f);
              attend_reference(s, il, q, out_r, mass_r, o);
              attend(s, il, q, out_s, mass_s, o);
              for (std::size_t i = 0; i < q.size(); ++i)
                worst = std::max(worst, double{std::abs(out_r[i] - out_s[i])});
              for (std::size_t i = 0; i < mass_r.size(); ++i) {
                worst = std::max(worst, double{std::abs(mass_r[i] - mass_s[i])});
              }
              std::vector<float> out_n(q.size());
              attend(s, il, q, out_n, {}, o);  // without mass: the same output
              for (std::size_t i = 0; i < q.size(); ++i) CHECK(out_n[i] == out_s[i]);
            }
          }
        }
        CHECK(worst < kTol);
      }
    }
  }
}

TEST_CASE("attend() validates its arguments like attend_reference()") {
  StreamConfig c{1, 2, 8, 16, DType::f32, PositionMode::reindexed, {}, PolicyConfig::full()};
  StreamCache s(kvtest::make_pool(c, 16), c);
  std::vector<float> q(32), out(32), mass;
  CHECK_THROWS_AS(attend(s, 0, q, out, mass, AttendOptions{4}), InvalidArgument);  // empty cache
  kvtest::push_token(s);
  CHECK_NOTHROW(attend(s, 0, q, out, mass, AttendOptions{4}));
  CHECK_THROWS_AS(attend(s, 1, q, out, mass, AttendOptions{4}), InvalidArgument);  // no such layer
  CHECK_THROWS_AS(attend(s, 0, q, out, mass, AttendOptions{3}), InvalidArgument);  // not a multiple
  std::vector<float> short_out(31);
  CHECK_THROWS_AS(attend(s, 0, q, short_out, mass, AttendOptions{4}), InvalidArgument);
  std::vector<float> bad_mass(5);
  CHECK_THROWS_AS(attend(s, 0, q, out, bad_mass, AttendOptions{4}), InvalidArgument);
}
