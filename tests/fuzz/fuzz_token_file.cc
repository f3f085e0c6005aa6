// Fuzzes the uint16 token-shard reader (integrations/llama/token_file.h).
//
// Input: byte 0 picks the vocabulary size (including degenerate ones), the rest is the file.
// On success every id must be < vocab_size and equal the little-endian uint16 at its offset.
#include <cstdint>

#include "fuzz_support.h"
#include "kvcache/error.h"
#include "llama/token_file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (std::size_t{1} << 20)) return 0;
  static constexpr std::uint32_t kVocabs[] = {0, 1, 259, 512, 32000, 65535, 65536, 0xffffffffu};
  const std::uint32_t vocab = kVocabs[data[0] % std::size(kVocabs)];
  const std::span<const std::uint8_t> body(data + 1, size - 1);
  static kvcache::fuzz::MemFile file;
  file.write(body);
  std::vector<std::int32_t> tokens;
  try {
    tokens = kvcache::llama::read_token_file(file.path(), vocab);
  } catch (const kvcache::Error&) {
    return 0;
  }
  FUZZ_CHECK(!body.empty() && body.size() % 2 == 0);
  FUZZ_CHECK(tokens.size() == body.size() / 2);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::int32_t want = body[2 * i] | (body[2 * i + 1] << 8);
    FUZZ_CHECK(tokens[i] == want);
    FUZZ_CHECK(tokens[i] >= 0 && static_cast<std::uint32_t>(tokens[i]) < vocab);
  }
  return 0;
}
