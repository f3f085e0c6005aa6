#include "scoring.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kvcache/error.h"
#include "text_output.h"

namespace kvstream {
namespace {

// -log p(target) under softmax(logits), in double.
double nll(std::span<const float> logits, std::int32_t target) {
  double mx = logits[0];
  for (float l : logits) mx = std::max(mx, double{l});
  double sum = 0;
  for (float l : logits) sum += std::exp(double{l} - mx);
  return std::log(sum) + mx - logits[static_cast<std::size_t>(target)];
}

}  // namespace

double Segment::ppl() const { return std::exp(nll_sum / static_cast<double>(end - begin)); }

double StreamScore::nll_mean() const { return scored ? nll_sum / static_cast<double>(scored) : 0.0; }
double StreamScore::ppl() const { return std::exp(nll_mean()); }
double StreamScore::tokens_per_second() const {
  return seconds > 0 ? static_cast<double>(scored) / seconds : 0.0;
}

StreamScore score_stream(kvcache::llama::Decoder& dec, std::span<const std::int32_t> tokens,
                         std::uint32_t segment_tokens, const ScoreProgress& progress, bool keep_token_nll) {
  if (tokens.size() < 2)
    throw kvcache::InvalidArgument("scoring needs at least 2 tokens (one context, one scored)");
  if (segment_tokens == 0) throw kvcache::InvalidArgument("segment length must be at least 1 token");
  using Clock = std::chrono::steady_clock;
  StreamScore s;
  s.scorable = tokens.size() - 1;
  if (keep_token_nll) s.token_nll.reserve(s.scorable);
  const auto start = Clock::now();
  for (; s.scored < s.scorable && !interrupted(); ++s.scored) {
    const std::uint64_t t = s.scored;
    // Token t is fed; the logits it produces score token t + 1.
    const double l = nll(dec.step(tokens[t]), tokens[t + 1]);
    s.nll_sum += l;
    if (keep_token_nll) s.token_nll.push_back(l);
    if (t % segment_tokens == 0) s.segments.push_back({t, t, 0});
    s.segments.back().nll_sum += l;
    s.segments.back().end = t + 1;
    if (progress) progress(t + 1, s.nll_sum);
  }
  s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  s.stats = dec.cache().stats();
  return s;
}

}  // namespace kvstream
