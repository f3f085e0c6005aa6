#include "fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "kvcache/stream_cache.h"

namespace kvcache::fuzz {

MemFile::MemFile() {
  fd_ = ::memfd_create("kvcache_fuzz", MFD_CLOEXEC);
  FUZZ_CHECK(fd_ >= 0);
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemFile::~MemFile() { ::close(fd_); }

void MemFile::write(std::span<const std::uint8_t> data) {
  FUZZ_CHECK(::ftruncate(fd_, 0) == 0);
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0);
    done += static_cast<std::size_t>(n);
  }
}

namespace {

struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = std::string(base) + "/kvcache_fuzz_XXXXXX";
    FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

void put_i32(std::vector<std::uint8_t>& out, std::int32_t v) {
  std::uint8_t b[4];
  std::memcpy(b, &v, 4);
  out.insert(out.end(), b, b + 4);
}

void put_f32(std::vector<std::uint8_t>& out, float v) {
  std::uint8_t b[4];
  std::memcpy(b, &v, 4);
  out.insert(out.end(), b, b + 4);
}

}  // namespace

const std::filesystem::path& scratch_dir() {
  static const ScratchDir dir;  // function-local static: destroyed (removed) at exit
  return dir.path;
}

std::uint64_t fnv1a64(const std::uint8_t* data, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

void patch_snapshot_checksum(std::vector<std::uint8_t>& snapshot) {
  if (snapshot.size() < 8) return;
  const std::uint64_t sum = fnv1a64(snapshot.data(), snapshot.size() - 8);
  std::memcpy(snapshot.data() + snapshot.size() - 8, &sum, 8);
}

std::vector<std::uint8_t> synthetic_tokenizer(std::uint32_t* vocab_size) {
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (unsigned b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    pieces.emplace_back(buf);
  }
  std::vector<float> scores(pieces.size(), 0.f);
  // Printable ASCII as single-character pieces (all but '<', so no pair of them can spell a
  // byte piece such as "<0x41>"), then merges, longer ones scoring higher as BPE vocabularies do.
  for (char c = ' '; c <= '~'; ++c) {
    if (c == '<') continue;
    pieces.emplace_back(1, c);
    scores.push_back(-100.f - static_cast<float>(c));
  }
  const char* merges[] = {" t", "th",  "he",   "the", " the", "in", " a",
                          "an", "and", " and", "ed",  "er",   "on", "re"};
  float score = -50.f;
  for (const char* m : merges) {
    pieces.emplace_back(m);
    scores.push_back(score + static_cast<float>(std::strlen(m)));
    score += 1.f;
  }
  std::vector<std::uint8_t> out;
  std::int32_t max_len = 0;
  for (const std::string& p : pieces) max_len = std::max(max_len, static_cast<std::int32_t>(p.size()));
  put_i32(out, max_len);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    put_f32(out, scores[i]);
    put_i32(out, static_cast<std::int32_t>(pieces[i].size()));
    out.insert(out.end(), pieces[i].begin(), pieces[i].end());
  }
  *vocab_size = static_cast<std::uint32_t>(pieces.size());
  return out;
}

std::vector<std::uint8_t> synthetic_checkpoint(std::uint32_t n_kv_heads, bool separate_classifier) {
  const std::int32_t dim = 8, hidden = 16, layers = 1, heads = 2, vocab = 259, seq_len = 8;
  const std::int32_t head_dim = dim / heads, kv_dim = static_cast<std::int32_t>(n_kv_heads) * head_dim;
  std::vector<std::uint8_t> out;
  for (std::int32_t v : {dim, hidden, layers, heads, static_cast<std::int32_t>(n_kv_heads),
                         separate_classifier ? -vocab : vocab, seq_len}) {
    put_i32(out, v);
  }
  const std::size_t n_floats = std::size_t(vocab) * dim + layers * dim + std::size_t(layers) * dim * dim +
                               2 * std::size_t(layers) * kv_dim * dim + std::size_t(layers) * dim * dim +
                               layers * dim + 3 * std::size_t(layers) * hidden * dim + dim +
                               2 * std::size_t(seq_len) * (head_dim / 2) +
                               (separate_classifier ? std::size_t(vocab) * dim : 0);
  for (std::size_t i = 0; i < n_floats; ++i)
    put_f32(out, static_cast<float>(static_cast<int>(i % 17) - 8) / 64.f);
  return out;
}

}  // namespace kvcache::fuzz

// ---- stream checks --------------------------------------------------------------------------

namespace kvcache::fuzz {
namespace {

struct Hasher {
  std::uint64_t h = 0xcbf29ce484222325ull;
  template <class T>
  void add(const T& v) {
    std::uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    for (std::uint8_t x : b) {
      h ^= x;
      h *= 0x100000001b3ull;
    }
  }
};

}  // namespace

std::uint64_t stream_fingerprint(const StreamCache& cache, bool content_only) {
  Hasher h;
  const StreamStats st = cache.stats();
  h.add(st.tokens_seen);
  h.add(st.tokens_kept);
  h.add(st.tokens_pinned);
  h.add(st.tokens_evicted);
  if (!content_only) {
    h.add(st.pages);
    h.add(st.kv_bytes);
    h.add(st.kv_bytes_peak);
    h.add(cache.n_pending());
  }
  const StreamConfig& c = cache.config();
  for (std::uint32_t il = 0; il < c.n_layers; ++il) h.add(cache.layer_ready(il));
  const std::vector<KeptToken> kept = cache.tokens();
  for (const KeptToken& t : kept) {
    h.add(t.meta.pos);
    h.add(t.meta.token);
    h.add(t.meta.score);
    h.add(t.meta.sink_heads);
    h.add(t.meta.pin);
    h.add(t.cache_pos);
  }
  std::vector<float> row(c.head_dim);
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    if (!cache.layer_ready(il)) continue;  // rows of pending tokens are not written yet
    for (std::uint32_t i = 0; i < kept.size(); ++i) {
      for (std::uint32_t kh = 0; kh < c.n_kv_heads; ++kh) {
        cache.read_key(il, i, kh, row);
        for (float x : row) h.add(x);
        cache.read_value(il, i, kh, row);
        for (float x : row) h.add(x);
      }
    }
  }
  return h.h;
}

void check_stream_invariants(const StreamCache& cache) {
  const StreamStats st = cache.stats();
  const StreamConfig& c = cache.config();
  const std::vector<KeptToken> kept = cache.tokens();
  FUZZ_CHECK(kept.size() == cache.n_kept());
  FUZZ_CHECK(st.tokens_kept == cache.n_kept() && st.tokens_pinned == cache.n_pinned());
  FUZZ_CHECK(cache.n_pinned() <= cache.n_kept());
  FUZZ_CHECK(cache.n_kept() <= cache.policy().budget());
  FUZZ_CHECK(st.tokens_kept <= st.tokens_seen);
  FUZZ_CHECK(st.tokens_seen - st.tokens_kept == st.tokens_evicted);
  FUZZ_CHECK(st.kv_bytes <= st.kv_bytes_peak);
  FUZZ_CHECK(cache.n_pending() <= cache.n_kept());
  // Every kept token needs a slot in every layer (a pinned page holds pinned_layout()'s tokens:
  // as many as fit at the pinned dtype in a window-sized page).
  const std::size_t P = c.page_tokens, Pp = c.pinned_layout().page_tokens;
  const std::size_t n_pinned = cache.n_pinned(), n_window = cache.n_kept() - n_pinned;
  FUZZ_CHECK(st.pages >= c.n_layers * ((n_pinned + Pp - 1) / Pp + (n_window + P - 1) / P));
  for (std::size_t i = 0; i < kept.size(); ++i) {
    const KeptToken& t = kept[i];
    FUZZ_CHECK((i < n_pinned) == (t.meta.pin != PinReason::none));
    FUZZ_CHECK(t.meta.pos >= 0 && static_cast<std::uint64_t>(t.meta.pos) < st.tokens_seen);
    if (i > 0) FUZZ_CHECK(t.meta.pos > kept[i - 1].meta.pos);
    if (i > n_pinned) FUZZ_CHECK(t.meta.pos == kept[i - 1].meta.pos + 1);
    const std::int64_t want =
        c.positions == PositionMode::reindexed ? static_cast<std::int64_t>(i) : t.meta.pos;
    FUZZ_CHECK(t.cache_pos == want);
    FUZZ_CHECK(cache.cache_position(static_cast<std::uint32_t>(i)) == want);
  }
}

}  // namespace kvcache::fuzz
