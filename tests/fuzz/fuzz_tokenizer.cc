// Fuzzes the llama2.c tokenizer (integrations/llama/tokenizer.h) two ways, chosen by bit 0 of the
// first byte:
//  - load: the rest of the input is a tokenizer file, loaded with a vocabulary size taken from
//    bytes 1-2; a file that loads must then encode and decode a fixed text without trouble.
//  - text: a valid synthetic tokenizer (built once) encodes the rest of the input as text (bits
//    1-2: BOS, EOS); every id must be in range, and decoding must give the text back exactly
//    (this vocabulary has byte fallback and no piece that could spell a "<0xNN>" byte piece).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "kvcache/error.h"
#include "llama/tokenizer.h"

namespace {

using kvcache::llama::Tokenizer;

// Decodes `ids` as a generation loop would (each token printed after its predecessor).
std::string decode_all(const Tokenizer& t, const std::vector<std::int32_t>& ids) {
  std::string out;
  std::int32_t prev = -1;
  for (std::int32_t id : ids) {
    FUZZ_CHECK(id >= 0 && static_cast<std::uint32_t>(id) < t.vocab_size());
    out += t.decode(prev, id);
    prev = id;
  }
  return out;
}

// Out-of-range ids are caller errors, reported as InvalidArgument.
void check_rejects_bad_ids(const Tokenizer& t) {
  for (std::int32_t bad : {-1, static_cast<std::int32_t>(t.vocab_size()), INT32_MAX, INT32_MIN}) {
    bool threw = false;
    try {
      (void)t.decode(Tokenizer::kBos, bad);
    } catch (const kvcache::InvalidArgument&) {
      threw = true;
    }
    FUZZ_CHECK(threw);
  }
}

const Tokenizer& synthetic() {
  static const Tokenizer t = [] {
    std::uint32_t vocab = 0;
    const std::vector<std::uint8_t> bytes = kvcache::fuzz::synthetic_tokenizer(&vocab);
    kvcache::fuzz::MemFile file;
    file.write(bytes);
    return Tokenizer::load(file.path(), vocab);
  }();
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > 8192) return 0;  // encode is O(n log n); 8 KiB keeps a run ~1 ms
  const std::uint8_t mode = data[0];
  if ((mode & 1) == 0) {
    if (size < 3) return 0;
    // 250..761: mostly valid sizes, a few below the 259 the loader requires.
    const std::uint32_t vocab = 250 + (static_cast<std::uint32_t>(data[1] | (data[2] << 8)) % 512);
    static kvcache::fuzz::MemFile file;
    file.write({data + 3, size - 3});
    std::optional<Tokenizer> t;
    try {
      t = Tokenizer::load(file.path(), vocab);
    } catch (const kvcache::Error&) {
      return 0;
    }
    FUZZ_CHECK(t->vocab_size() == vocab);
    for (std::uint32_t b = 0; b < 256; ++b) {
      const std::string_view d = t->decode(0, static_cast<std::int32_t>(Tokenizer::kFirstByteToken + b));
      FUZZ_CHECK(d.size() == 1 && static_cast<std::uint8_t>(d[0]) == b);
    }
    const std::string text = "Once upon a time, the cat sat.\n\xe2\x82\xac\xff<0x41> end";
    (void)decode_all(*t, t->encode(text, true, true));
    check_rejects_bad_ids(*t);
    return 0;
  }
  const Tokenizer& t = synthetic();
  const bool bos = (mode & 2) != 0, eos = (mode & 4) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::vector<std::int32_t> ids = t.encode(text, bos, eos);
  FUZZ_CHECK(!bos || (!ids.empty() && ids.front() == Tokenizer::kBos));
  FUZZ_CHECK(!eos || (!ids.empty() && ids.back() == Tokenizer::kEos));
  const std::string decoded = decode_all(t, ids);
  // The dummy-prefix space encode() adds is dropped again at the start of the text (after BOS, or
  // as the first token: TextTokenizer::decode's prev -1), as SentencePiece's decoder does.
  FUZZ_CHECK(decoded == text);
  check_rejects_bad_ids(t);
  return 0;
}
