// Per-token scores of a perplexity run as CSV (`kvstream ppl --nll-out`, `sweep --nll-dir`), the
// input of `kvstream compare`. One row per scored token:
//
//   position,token,nll
//   1,403,2.7315249443054199
//
// `position` is the scored token's index in the input (the context token at 0 is never scored),
// `token` its id, `nll` its negative log-likelihood in nats, printed to round-trip a double.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace kvstream {

struct TokenNll {
  std::vector<std::int32_t> tokens;  ///< the scored token ids, position 1 first
  std::vector<double> nll;           ///< nll[i] scores tokens[i]
};

/// Writes `nll[i]` as the score of `input[i + 1]` (nll.size() < input.size()). The file is written
/// beside `path` and renamed into place, so a failure leaves no partial file. Throws
/// kvcache::InvalidArgument on mismatched sizes and kvcache::Error when it cannot write.
void write_token_nll_csv(const std::filesystem::path& path, std::span<const std::int32_t> input,
                         std::span<const double> nll);

/// Reads a file written by write_token_nll_csv. Throws kvcache::FormatError naming the file and line
/// for a wrong header, a malformed row, positions that do not run 1, 2, 3, ..., a negative token or
/// a negative or non-finite score, or no rows; kvcache::Error when it cannot be read.
TokenNll read_token_nll_csv(const std::filesystem::path& path);

}  // namespace kvstream
