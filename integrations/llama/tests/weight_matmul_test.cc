// weight_matmul: the Highway kernels equal the scalar twin on every compiled target for every
// weight type, both are within the activation-rounding bound of dequantise-then-f32-dot, the
// threaded split equals the serial product, and bad arguments are rejected.
// The kernels compile Highway's AVX3_DL target (weight_matmul_hwy.cc); ask for it here too so
// SupportedAndGeneratedTargets() lists it and it is tested on CPUs that have it.
#define HWY_WANT_AVX3_DL 1

#include "llama/weight_matmul.h"

#include <doctest/doctest.h>
#include <hwy/targets.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kvcache/error.h"
#include "llama/ggml_quant.h"

namespace kvcache::llama::test {
namespace {

constexpr GgmlType kAllTypes[] = {GgmlType::f32,  GgmlType::f16,  GgmlType::bf16, GgmlType::q8_0,
                                  GgmlType::q4_0, GgmlType::q4_k, GgmlType::q6_k};

// A random matrix quantised to `type`, stored one byte past an aligned address so no load may
// assume alignment, with its exact dequantised values.
struct Matrix {
  std::vector<std::byte> storage;
  std::vector<float> dense;  // rows x cols, as dequantize_row reads the stored rows
  WeightMatrix w;
};

Matrix make_matrix(GgmlType type, std::uint32_t rows, std::uint32_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  Matrix m;
  const std::size_t row_bytes = *ggml_row_bytes(type, cols);
  m.storage.resize(1 + rows * row_bytes);
  m.dense.resize(std::size_t{rows} * cols);
  m.w = WeightMatrix{type, rows, cols, m.storage.data() + 1, row_bytes};
  std::vector<float> row(cols);
  for (std::uint32_t r = 0; r < rows; ++r) {
    const float scale = std::ldexp(1.f, static_cast<int>(r % 5) - 2);  // rows of different magnitudes
    for (float& v : row) v = scale * dist(rng);
    quantize_row(type, row, m.storage.data() + 1 + r * row_bytes);
    dequantize_row(type, m.w.row(r), std::span<float>(m.dense).subspan(std::size_t{r} * cols, cols));
  }
  return m;
}

std::vector<float> make_activations(std::uint32_t n, std::uint32_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> x(std::size_t{n} * cols);
  for (float& v : x) v = dist(rng);
  return x;
}

// sum_c |W[r][c] x[t][c]| for each output: the scale of every rounding error below.
std::vector<double> magnitudes(const Matrix& m, const std::vector<float>& x, std::uint32_t n) {
  const std::uint32_t rows = m.w.rows, cols = m.w.cols;
  std::vector<double> out(std::size_t{n} * rows);
  for (std::uint32_t t = 0; t < n; ++t)
    for (std::uint32_t r = 0; r < rows; ++r) {
      double s = 0;
      for (std::uint32_t c = 0; c < cols; ++c)
        s += std::fabs(double(m.dense[std::size_t{r} * cols + c]) * x[std::size_t{t} * cols + c]);
      out[std::size_t{t} * rows + r] = s;
    }
  return out;
}

std::vector<std::uint32_t> cols_for(GgmlType type) {
  switch (ggml_block_elems(type)) {
    case 1:
      return {1, 7, 37, 64, 100};
    case 32:  // 1, 3, 5, 17 and 35 blocks: pairs and an odd last block for the VNNI kernels
      return {32, 96, 160, 544, 1120};
    default:
      return {256, 768};
  }
}

template <class Body>
void for_each_target(Body&& body) {
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string target_name = hwy::TargetName(target);
    CAPTURE(target_name);
    MESSAGE("target ", target_name);
    body();
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace

// Both sides sum the same f32 block terms (exact integer dot products times the same scale
// products) in different orders: each partial sum is off by at most one rounding, so the gap is
// at most about (terms summed) * 2^-24 * sum |term|. 1e-5 of sum |W x| covers up to ~150 terms
// (768 / 32 blocks or 100 float columns here) with margin; a wrong block or a dropped term moves
// a result by ~1e-2 of it.
TEST_CASE("weight kernels equal the scalar twin on every target, type, shape and batch") {
  int targets = 0;
  for_each_target([&] {
    ++targets;
    std::uint32_t seed = 1;
    for (GgmlType type : kAllTypes) {
      CAPTURE(ggml_type_name(type));
      for (std::uint32_t rows : {1u, 5u, 13u})
        for (std::uint32_t cols : cols_for(type)) {
          const Matrix m = make_matrix(type, rows, cols, seed++);
          for (std::uint32_t n : {1u, 2u, 3u, 7u, 64u}) {
            CAPTURE(rows);
            CAPTURE(cols);
            CAPTURE(n);
            const auto x = make_activations(n, cols, seed++);
            std::vector<float> fast(std::size_t{n} * rows, NAN), twin(std::size_t{n} * rows, NAN);
            MatmulScratch s1, s2;
            weight_matmul(m.w, x, n, fast, s1);
            weight_matmul_scalar(m.w, x, n, twin, s2);
            const auto mag = magnitudes(m, x, n);
            for (std::size_t i = 0; i < fast.size(); ++i)
              REQUIRE(std::fabs(fast[i] - twin[i]) <= 1e-5 * mag[i] + 1e-30);
          }
        }
    }
  });
  CHECK(targets >= 1);
}

// Against a plain double dot product of the dequantised weights: for the quantized types each
// activation moves by at most half its block's step d_x / 2 = max|x_block| / 254, so an output
// moves by at most sum_c |W[r][c]| d_x(c) / 2; f32 rounding adds at most cols * 2^-24 * sum |W x|.
TEST_CASE("weight_matmul is within the activation-rounding bound of dequantise-then-dot") {
  std::uint32_t seed = 100;
  for (GgmlType type : kAllTypes) {
    CAPTURE(ggml_type_name(type));
    const std::uint32_t rows = 9, cols = ggml_block_elems(type) == 1 ? 300 : 512, n = 3;
    const Matrix m = make_matrix(type, rows, cols, seed++);
    const auto x = make_activations(n, cols, seed++);
    std::vector<float> y(std::size_t{n} * rows);
    MatmulScratch scratch;
    weight_matmul(m.w, x, n, y, scratch);
    const auto mag = magnitudes(m, x, n);
    double worst_ratio = 0;
    for (std::uint32_t t = 0; t < n; ++t)
      for (std::uint32_t r = 0; r < rows; ++r) {
        double exact = 0, bound = 0;
        for (std::uint32_t c = 0; c < cols; ++c) {
          const double w = m.dense[std::size_t{r} * cols + c];
          exact += w * x[std::size_t{t} * cols + c];
          if (quantizes_activations(type)) {
            float amax = 0.f;
            const std::size_t b0 = std::size_t{t} * cols + c / 32 * 32;
            for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b0 + j]));
            bound += std::fabs(w) * amax / 254.0;
          }
        }
        const std::size_t i = std::size_t{t} * rows + r;
        bound = bound * (1 + 1e-4) + cols * 0x1p-24 * mag[i];
        const double err = std::fabs(y[i] - exact);
        REQUIRE(err <= bound);
        worst_ratio = std::max(worst_ratio, err / mag[i]);
      }
    MESSAGE(ggml_type_name(type), ": worst |error| / sum|W x| = ", worst_ratio);
  }
}

TEST_CASE("a product split across threads equals the scalar twin") {
  oneapi::tbb::task_arena arena(2);
  for (GgmlType type : {GgmlType::f32, GgmlType::q4_0, GgmlType::q6_k}) {
    CAPTURE(ggml_type_name(type));
    // 67 x 512 x 64 = 2.2M multiply-adds: just above the split threshold, cut into chunks of
    // 8 rows with a remainder.
    const std::uint32_t rows = 67, cols = 512, n = 64;
    REQUIRE(std::uint64_t{rows} * cols * n >= kParallelWeightMacs);
    const Matrix m = make_matrix(type, rows, cols, 7);
    const auto x = make_activations(n, cols, 8);
    std::vector<float> fast(std::size_t{n} * rows), twin(std::size_t{n} * rows);
    MatmulScratch s1, s2;
    arena.execute([&] { weight_matmul(m.w, x, n, fast, s1); });
    weight_matmul_scalar(m.w, x, n, twin, s2);
    const auto mag = magnitudes(m, x, n);
    for (std::size_t i = 0; i < fast.size(); ++i)
      REQUIRE(std::fabs(fast[i] - twin[i]) <= 1e-5 * mag[i] + 1e-30);
  }
}

// weight_matmuls must write exactly what one weight_matmul per matrix writes, serial or split
// across threads, whatever mix of types shares the activations.
TEST_CASE("grouped products equal one product per matrix, bit for bit") {
  oneapi::tbb::task_arena arena(2);
  struct Mix {
    std::vector<GgmlType> types;
    std::vector<std::uint32_t> rows;
    std::uint32_t cols;
  };
  const Mix mixes[] = {
      {{GgmlType::q4_0, GgmlType::q4_0, GgmlType::q4_0}, {2048, 259, 256}, 512},  // q, k, v; odd k rows
      {{GgmlType::q4_k, GgmlType::q4_k, GgmlType::q6_k}, {640, 128, 128}, 1024},  // Q4_K_M's v
      {{GgmlType::f32, GgmlType::q8_0}, {37, 300}, 256},                          // float beside quantized
      {{GgmlType::f16, GgmlType::bf16, GgmlType::q8_0, GgmlType::q4_0}, {3, 5, 7, 9}, 64},  // below the split
  };
  for (const Mix& mix : mixes) {
    for (std::uint32_t n : {1u, 5u}) {
      CAPTURE(mix.cols);
      CAPTURE(n);
      std::vector<Matrix> ms;
      for (std::size_t i = 0; i < mix.types.size(); ++i)
        ms.push_back(make_matrix(mix.types[i], mix.rows[i], mix.cols, 20 + static_cast<std::uint32_t>(i)));
      const auto x = make_activations(n, mix.cols, 30);
      std::vector<std::vector<float>> grouped, single;
      std::vector<WeightProduct> products;
      for (const Matrix& m : ms) {
        grouped.emplace_back(std::size_t{n} * m.w.rows, -1.f);
        single.emplace_back(std::size_t{n} * m.w.rows, -2.f);
      }
      for (std::size_t i = 0; i < ms.size(); ++i) products.push_back({ms[i].w, grouped[i]});
      MatmulScratch s1, s2;
      arena.execute([&] {
        weight_matmuls(products, x, n, s1);
        for (std::size_t i = 0; i < ms.size(); ++i) weight_matmul(ms[i].w, x, n, single[i], s2);
      });
      for (std::size_t i = 0; i < ms.size(); ++i) {
        CAPTURE(i);
        CHECK(grouped[i] == single[i]);
      }
    }
  }
}

TEST_CASE("grouped products reject what weight_matmul rejects, and matrices of different widths") {
  const Matrix a = make_matrix(GgmlType::q8_0, 4, 64, 11), b = make_matrix(GgmlType::q8_0, 4, 96, 12);
  const auto x = make_activations(1, 96, 13);
  std::vector<float> ya(4, 7.f), yb(4, 7.f);
  MatmulScratch scratch;
  const WeightProduct widths[] = {{a.w, ya}, {b.w, yb}};
  CHECK_THROWS_WITH_AS(weight_matmuls(widths, x, 1, scratch), doctest::Contains("columns"), InvalidArgument);
  const WeightProduct short_y[] = {{a.w, ya}, {a.w, std::span<float>(yb).first(3)}};
  CHECK_THROWS_AS(weight_matmuls(short_y, x, 1, scratch), InvalidArgument);
  const WeightProduct five[] = {{a.w, ya}, {a.w, ya}, {a.w, ya}, {a.w, ya}, {a.w, ya}};
  CHECK_THROWS_AS(weight_matmuls(five, x, 1, scratch), InvalidArgument);
  CHECK_THROWS_AS(weight_matmuls({}, x, 1, scratch), InvalidArgument);
  // A rejected call writes no output.
  CHECK(ya == std::vector<float>(4, 7.f));
  CHECK(yb == std::vector<float>(4, 7.f));
}

TEST_CASE("the activation scratch is reused without reallocation") {
  const Matrix m = make_matrix(GgmlType::q8_0, 8, 256, 3);
  const auto x = make_activations(4, 256, 4);
  std::vector<float> y(4 * 8);
  MatmulScratch scratch;
  weight_matmul(m.w, x, 4, y, scratch);
  const std::int8_t* qs = scratch.qs();
  const float* scales = scratch.scales();
  for (std::uint32_t n : {1u, 4u, 2u}) {
    weight_matmul(m.w, x, n, y, scratch);
    CHECK(scratch.qs() == qs);
    CHECK(scratch.scales() == scales);
  }
}

TEST_CASE("a non-finite activation makes its outputs NaN for quantized weights") {
  const Matrix m = make_matrix(GgmlType::q4_0, 4, 64, 5);
  auto x = make_activations(1, 64, 6);
  x[40] = INFINITY;
  std::vector<float> y(4), twin(4);
  MatmulScratch scratch;
  weight_matmul(m.w, x, 1, y, scratch);
  weight_matmul_scalar(m.w, x, 1, twin, scratch);
  for (std::size_t r = 0; r < 4; ++r) {
    CHECK(std::isnan(y[r]));
    CHECK(std::isnan(twin[r]));
  }
}

TEST_CASE("weight_matmul rejects inconsistent sizes") {
  const Matrix m = make_matrix(GgmlType::q8_0, 4, 64, 9);
  std::vector<float> x(64), y(4);
  MatmulScratch scratch;
  CHECK_THROWS_AS(weight_matmul(m.w, std::span<const float>(x).first(63), 1, y, scratch), InvalidArgument);
  CHECK_THROWS_AS(weight_matmul(m.w, x, 1, std::span<float>(y).first(3), scratch), InvalidArgument);
  CHECK_THROWS_AS(weight_matmul(m.w, x, 0, y, scratch), InvalidArgument);
  WeightMatrix bad = m.w;
  bad.cols = 48;  // not whole q8_0 blocks
  CHECK_THROWS_AS(weight_matmul(bad, x, 1, y, scratch), InvalidArgument);
  bad = m.w;
  bad.row_bytes += 1;
  CHECK_THROWS_AS(weight_matmul_scalar(bad, x, 1, y, scratch), InvalidArgument);
}

}  // namespace kvcache::llama::test
