#include "token_nll_file.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "kvcache/error.h"
#include "llama/binary_io.h"

namespace kvstream {
namespace {

constexpr std::string_view kHeader = "position,token,nll";

template <typename T>
bool parse(std::string_view s, T& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

void write_token_nll_csv(const std::filesystem::path& path, std::span<const std::int32_t> input,
                         std::span<const double> nll) {
  if (nll.size() >= input.size()) {
    throw kvcache::InvalidArgument(fmt::format("{}: {} scores for {} input tokens (at most {})",
                                               path.string(), nll.size(), input.size(),
                                               input.size() - (input.empty() ? 0 : 1)));
  }
  std::string text(kHeader);
  text += '\n';
  for (std::size_t i = 0; i < nll.size(); ++i)
    fmt::format_to(std::back_inserter(text), "{},{},{}\n", i + 1, input[i + 1], nll[i]);
  kvcache::llama::write_file_atomically(path, std::as_bytes(std::span(text.data(), text.size())),
                                        "per-token score file");
}

TokenNll read_token_nll_csv(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw kvcache::Error(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)));
  const auto bad = [&](std::size_t line, std::string_view what) {
    return kvcache::FormatError(fmt::format("{}:{}: {}", path.string(), line, what));
  };
  TokenNll out;
  std::string row;
  std::size_t line = 0;
  while (std::getline(f, row)) {
    ++line;
    if (!row.empty() && row.back() == '\r') row.pop_back();
    if (line == 1) {
      if (row != kHeader)
        throw bad(1, fmt::format("expected the header '{}' of a per-token score file", kHeader));
      continue;
    }
    const std::size_t c1 = row.find(',');
    const std::size_t c2 = c1 == std::string::npos ? c1 : row.find(',', c1 + 1);
    if (c2 == std::string::npos || row.find(',', c2 + 1) != std::string::npos)
      throw bad(line, "expected three fields: position,token,nll");
    const std::string_view v(row);
    std::uint64_t pos = 0;
    std::int32_t token = 0;
    double nll = 0;
    if (!parse(v.substr(0, c1), pos)) throw bad(line, "position is not a non-negative integer");
    if (pos != out.nll.size() + 1)
      throw bad(line, fmt::format("position {} where {} was expected (rows run 1, 2, 3, ...)", pos,
                                  out.nll.size() + 1));
    if (!parse(v.substr(c1 + 1, c2 - c1 - 1), token) || token < 0)
      throw bad(line, "token is not a non-negative id");
    if (!parse(v.substr(c2 + 1), nll) || !std::isfinite(nll) || nll < 0)
      throw bad(line, "nll is not a finite non-negative number");
    out.tokens.push_back(token);
    out.nll.push_back(nll);
  }
  if (f.bad()) throw kvcache::Error(fmt::format("{}: read error", path.string()));
  if (line == 0) throw bad(1, "empty file");
  if (out.nll.empty()) throw bad(line, "no scored tokens after the header");
  return out;
}

}  // namespace kvstream
