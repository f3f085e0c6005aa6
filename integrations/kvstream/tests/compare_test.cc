// Unit tests of the paired comparison (paired_bootstrap.h) and the per-token score file
// (token_nll_file.h) behind `kvstream compare`.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kvcache/error.h"
#include "paired_bootstrap.h"
#include "token_nll_file.h"

namespace fs = std::filesystem;
using kvstream::BootstrapOptions;
using kvstream::compare_paired;

namespace {

// An AR(1) sequence of per-token differences around `mean`: neighbouring tokens correlated with
// coefficient `rho`, as the scores of nearby tokens are.
std::vector<double> correlated(std::size_t n, double mean, double rho, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::vector<double> d(n);
  double x = 0;
  for (double& v : d) {
    x = rho * x + std::sqrt(1 - rho * rho) * noise(rng);
    v = mean + 0.5 * x;
  }
  return d;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kvstream_compare_test_" + std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

}  // namespace

TEST_CASE("identical runs compare equal with a zero-width interval") {
  const std::vector<double> a{1.5, 2.0, 0.25, 3.0, 1.0};
  const auto r = compare_paired(a, a, {.block = 2, .resamples = 200});
  CHECK(r.log_ratio == 0.0);
  CHECK(r.ci_low == 0.0);
  CHECK(r.ci_high == 0.0);
  CHECK(r.verdict() == 0);
  CHECK(r.share_b_higher == 0.0);
  CHECK(r.ppl_a == doctest::Approx(std::exp((1.5 + 2.0 + 0.25 + 3.0 + 1.0) / 5)));
}

TEST_CASE("a constant shift is reported exactly, with a zero-width interval at the shift") {
  const std::vector<double> a{1.5, 2.0, 0.25, 3.0, 1.0, 0.5, 2.5};
  std::vector<double> b = a;
  for (double& v : b) v += 0.01;
  const auto r = compare_paired(a, b, {.block = 3, .resamples = 500});
  CHECK(r.log_ratio == doctest::Approx(0.01));
  CHECK(r.ci_low == doctest::Approx(0.01));
  CHECK(r.ci_high == doctest::Approx(0.01));
  CHECK(r.verdict() == 1);
  CHECK(r.share_b_higher == 1.0);
  CHECK(r.ratio() == doctest::Approx(r.ppl_b / r.ppl_a));
}

TEST_CASE("the interval covers the true mean difference at about the stated level") {
  // 200 independent texts of 2000 correlated differences with true mean 0.01: a 90% interval should
  // miss the true mean in about 20 of them. Blocks of 64 against rho = 0.9 (correlation length ~10)
  // keep the coverage; single-token blocks ignore the correlation and miss far more often.
  int missed_blocks = 0, missed_tokens = 0;
  for (std::uint64_t s = 0; s < 200; ++s) {
    const std::vector<double> d = correlated(2000, 0.01, 0.9, 1000 + s);
    const std::vector<double> zero(d.size(), 0.0);
    const auto rb = compare_paired(zero, d, {.block = 64, .resamples = 400, .seed = s, .level = 0.9});
    const auto rt = compare_paired(zero, d, {.block = 1, .resamples = 400, .seed = s, .level = 0.9});
    missed_blocks += (0.01 < rb.ci_low || 0.01 > rb.ci_high) ? 1 : 0;
    missed_tokens += (0.01 < rt.ci_low || 0.01 > rt.ci_high) ? 1 : 0;
  }
  MESSAGE("90% intervals missing the true mean out of 200: blocks of 64 ", missed_blocks, ", single tokens ",
          missed_tokens);
  CHECK(missed_blocks >= 8);  // ~20 expected; a bound this loose fails only on a broken interval
  CHECK(missed_blocks <= 40);
  CHECK(missed_tokens > 2 * missed_blocks);
}

TEST_CASE("a clear difference gets a verdict, noise does not") {
  const std::vector<double> noise = correlated(3000, 0.0, 0.5, 7);
  const std::vector<double> zero(noise.size(), 0.0);
  CHECK(compare_paired(zero, noise).verdict() == 0);
  const std::vector<double> lower = correlated(3000, -0.2, 0.5, 7);
  const auto r = compare_paired(zero, lower);
  CHECK(r.verdict() == -1);
  CHECK(r.ci_high < 0);
  CHECK(r.share_b_higher == 0.0);
}

TEST_CASE("the comparison is a pure function of its inputs and seed") {
  const std::vector<double> d = correlated(500, 0.0, 0.5, 3);
  const std::vector<double> zero(d.size(), 0.0);
  const auto r1 = compare_paired(zero, d, {.seed = 5});
  const auto r2 = compare_paired(zero, d, {.seed = 5});
  CHECK(r1.ci_low == r2.ci_low);
  CHECK(r1.ci_high == r2.ci_high);
  const auto r3 = compare_paired(zero, d, {.block = 100000});
  CHECK(r3.options.block == 500);  // clamped to the token count
}

TEST_CASE("bad arguments are rejected") {
  const std::vector<double> a{1, 2, 3}, b{1, 2}, inf{1, INFINITY, 2};
  CHECK_THROWS_AS(compare_paired(a, b), kvcache::InvalidArgument);
  CHECK_THROWS_AS(compare_paired({}, {}), kvcache::InvalidArgument);
  CHECK_THROWS_AS(compare_paired(a, inf), kvcache::InvalidArgument);
  CHECK_THROWS_AS(compare_paired(a, a, {.block = 0}), kvcache::InvalidArgument);
  CHECK_THROWS_AS(compare_paired(a, a, {.resamples = 99}), kvcache::InvalidArgument);
  CHECK_THROWS_AS(compare_paired(a, a, {.level = 1.0}), kvcache::InvalidArgument);
}

TEST_CASE("per-token score files round-trip exactly") {
  TempDir dir;
  const std::vector<std::int32_t> input{1, 403, 7, 511, 0};
  const std::vector<double> nll{2.7315249443054199, 0.1, 1e-300, 12.5};
  kvstream::write_token_nll_csv(dir.path / "a.csv", input, nll);
  const kvstream::TokenNll back = kvstream::read_token_nll_csv(dir.path / "a.csv");
  CHECK(back.tokens == std::vector<std::int32_t>{403, 7, 511, 0});
  CHECK(back.nll == nll);
  CHECK_FALSE(fs::exists(dir.path / "a.csv.tmp"));
  // More scores than tokens after the context: rejected, nothing written.
  CHECK_THROWS_AS(kvstream::write_token_nll_csv(dir.path / "b.csv", std::vector<std::int32_t>{1, 2}, nll),
                  kvcache::InvalidArgument);
  CHECK_FALSE(fs::exists(dir.path / "b.csv"));
}

TEST_CASE("malformed per-token score files are rejected with the file and line") {
  TempDir dir;
  const auto reject = [&](const std::string& text, const std::string& expected) {
    const fs::path p = dir.path / "bad.csv";
    write_text(p, text);
    try {
      kvstream::read_token_nll_csv(p);
      FAIL("accepted: ", text);
    } catch (const kvcache::FormatError& e) {
      const std::string what = e.what();
      CHECK_MESSAGE(what.find(p.string()) != std::string::npos, what);
      CHECK_MESSAGE(what.find(expected) != std::string::npos, what);
    }
  };
  reject("", ":1: empty file");
  reject("pos,token,nll\n1,2,0.5\n", ":1: expected the header");
  reject("position,token,nll\n", "no scored tokens");
  reject("position,token,nll\n1,2\n", ":2: expected three fields");
  reject("position,token,nll\n1,2,0.5,9\n", ":2: expected three fields");
  reject("position,token,nll\n2,2,0.5\n", ":2: position 2 where 1 was expected");
  reject("position,token,nll\n1,2,0.5\n1,3,0.5\n", ":3: position 1 where 2 was expected");
  reject("position,token,nll\n1,-2,0.5\n", "token is not");
  reject("position,token,nll\n1,x,0.5\n", "token is not");
  reject("position,token,nll\n1,2,-0.5\n", "nll is not");
  reject("position,token,nll\n1,2,nan\n", "nll is not");
  reject("position,token,nll\n1,2,0.5x\n", "nll is not");
  CHECK_THROWS_AS(kvstream::read_token_nll_csv(dir.path / "missing.csv"), kvcache::Error);
}
