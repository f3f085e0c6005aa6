// StreamCache::save / restore: a self-checking binary snapshot of one stream.
//
// Layout (all little-endian, no padding):
//   char[8] "KVCSNAP\0" | u32 version (3) | u32 front: slot of the oldest window token in the
//           first window page (< window page_tokens; 0 with an empty window)
//   config: u32 n_layers, n_kv_heads, head_dim, page_tokens | u8 dtype, positions, rope style,
//           policy kind | f64 rope theta | u32 budget, sinks, hidden_sinks, heavy |
//           u16 min_sink_heads | u32 token_state_floats | u32 n rope freq factors, n f32 |
//           u8 pinned dtype
//   counters: u64 tokens seen, tokens evicted, peak bytes | u32 n_pinned, n_window
//   per kept token (cache order): i64 pos, i32 token, f32 score, u16 sink_heads, u8 pin reason
//   per kept token: token_state_floats f32
//   per layer: the pinned pages, then the window pages, byte for byte (each region's page_bytes;
//           K as stored, i.e. rotated by the token's stored position; quantised pages with their
//           parameters), then for each q4 region: u32 staged rows n, and the f16 key copies of
//           rows [0, n) of its last page, head by head (see StreamConfig)
//   u64 FNV-1a over every byte before it
// Pages are saved whole (a q4 page's key parameters cover all its rows), so a restored stream
// continues bit for bit; pages are zeroed when taken from the pool, so no stale byte is saved.
// Versions 1 and 2 (read, not written) had one f32 or f16 dtype and, per layer, per kept token,
// per KV head, the K row then the V row instead of pages.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "kvcache/error.h"
#include "kvcache/stream/stream_state.h"

namespace kvcache {
namespace {

using Region = detail::Region;
constexpr char kMagic[8] = {'K', 'V', 'C', 'S', 'N', 'A', 'P', '\0'};
// Version 3 added the pinned region's dtype and stores whole pages (quantised pages); version 2
// added the rope frequency factors and the window front. Versions 1 and 2 (one f32 or f16 dtype,
// K/V rows per token, no factors in version 1) are still read.
constexpr std::uint32_t kVersion = 3;
constexpr std::size_t kMetaBytes = 8 + 4 + 4 + 2 + 1;

std::uint64_t fnv1a(const std::byte* data, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint8_t>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

class Writer {
 public:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    buf.insert(buf.end(), p, p + sizeof v);
  }
  void bytes(const std::byte* p, std::size_t n) { buf.insert(buf.end(), p, p + n); }
  std::vector<std::byte> buf;
};

// Bounds-checked reader: every read names the field, so errors say what was cut off.
class Reader {
 public:
  Reader(const std::vector<std::byte>& data, std::size_t end, std::string file)
      : data_(data), end_(end), file_(std::move(file)) {}
  template <class T>
  T get(const char* field) {
    T v;
    std::memcpy(&v, need(sizeof v, field), sizeof v);
    return v;
  }
  const std::byte* need(std::size_t n, const char* field) {
    if (end_ - pos_ < n) fail(std::string("truncated at ") + field);
    const std::byte* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError("snapshot " + file_ + ": " + what + " (offset " + std::to_string(pos_) + ")");
  }
  std::size_t remaining() const { return end_ - pos_; }

 private:
  const std::vector<std::byte>& data_;
  std::size_t end_;
  std::size_t pos_ = 0;
  std::string file_;
};

void write_config(Writer& w, const StreamConfig& c) {
  w.put(c.n_layers);
  w.put(c.n_kv_heads);
  w.put(c.head_dim);
  w.put(c.page_tokens);
  w.put(static_cast<std::uint8_t>(c.dtype));
  w.put(static_cast<std::uint8_t>(c.positions));
  w.put(static_cast<std::uint8_t>(c.rope.style));
  w.put(static_cast<std::uint8_t>(c.policy.kind));
  w.put(c.rope.theta);
  w.put(c.policy.budget);
  w.put(c.policy.sinks);
  w.put(c.policy.hidden_sinks);
  w.put(c.policy.heavy);
  w.put(c.policy.min_sink_heads);
  w.put(c.token_state_floats);
  w.put(static_cast<std::uint32_t>(c.rope.freq_factors.size()));
  for (float f : c.rope.freq_factors) w.put(f);
  w.put(static_cast<std::uint8_t>(c.pinned()));
}

// Reads the config and checks it field by field against `want`.
void check_config(Reader& r, const StreamConfig& want, std::uint32_t version) {
  auto same = [&](auto got, auto expected, const char* field) {
    if (got != expected) {
      r.fail(std::string("was taken with a different ") + field + " (" + std::to_string(+got) +
             ", this stream has " + std::to_string(+expected) + ")");
    }
  };
  same(r.get<std::uint32_t>("n_layers"), want.n_layers, "n_layers");
  same(r.get<std::uint32_t>("n_kv_heads"), want.n_kv_heads, "n_kv_heads");
  same(r.get<std::uint32_t>("head_dim"), want.head_dim, "head_dim");
  same(r.get<std::uint32_t>("page_tokens"), want.page_tokens, "page_tokens");
  same(r.get<std::uint8_t>("dtype"), static_cast<std::uint8_t>(want.dtype), "dtype");
  same(r.get<std::uint8_t>("positions"), static_cast<std::uint8_t>(want.positions), "position mode");
  same(r.get<std::uint8_t>("rope style"), static_cast<std::uint8_t>(want.rope.style), "rope style");
  same(r.get<std::uint8_t>("policy"), static_cast<std::uint8_t>(want.policy.kind), "policy");
  same(r.get<double>("rope theta"), want.rope.theta, "rope theta");
  same(r.get<std::uint32_t>("budget"), want.policy.budget, "budget");
  same(r.get<std::uint32_t>("sinks"), want.policy.sinks, "sinks");
  same(r.get<std::uint32_t>("hidden_sinks"), want.policy.hidden_sinks, "hidden_sinks");
  same(r.get<std::uint32_t>("heavy"), want.policy.heavy, "heavy");
  same(r.get<std::uint16_t>("min_sink_heads"), want.policy.min_sink_heads, "min_sink_heads");
  same(r.get<std::uint32_t>("token_state_floats"), want.token_state_floats, "token_state_floats");
  const std::vector<float>& factors = want.rope.freq_factors;
  const auto n_factors = version >= 2 ? r.get<std::uint32_t>("rope freq factor count") : std::uint32_t{0};
  same(n_factors, static_cast<std::uint32_t>(factors.size()), "number of rope freq factors");
  for (float f : factors) {
    if (r.get<float>("rope freq factor") != f) r.fail("was taken with different rope freq factors");
  }
  // Before version 3 both regions had the one dtype.
  const auto pinned =
      version >= 3 ? r.get<std::uint8_t>("pinned dtype") : static_cast<std::uint8_t>(want.dtype);
  same(pinned, static_cast<std::uint8_t>(want.pinned()), "pinned dtype");
}

void write_all(int fd, const std::vector<std::byte>& buf, const std::string& name) {
  std::size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::write(fd, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error("snapshot " + name + ": write failed: " + std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

void StreamCache::save(const std::filesystem::path& path) const {
  if (!state_) throw InvalidArgument("StreamCache: used after being moved from");
  const State& s = *state_;
  for (std::uint8_t w : s.written) {
    if (!w) throw InvalidArgument("StreamCache::save: pending tokens are not appended in every layer");
  }
  Writer w;
  w.bytes(reinterpret_cast<const std::byte*>(kMagic), sizeof kMagic);
  w.put(kVersion);
  // The window's offset in its first page, so a restored stream has the same page layout: SIMD
  // attention sums keys span by span, and a different split would change its rounding.
  w.put(std::uint32_t{s.front});
  write_config(w, s.config);
  w.put(std::uint64_t{s.seen});
  w.put(std::uint64_t{s.evicted});
  w.put(std::uint64_t{s.peak_bytes});
  w.put(static_cast<std::uint32_t>(s.pinned.size()));
  w.put(static_cast<std::uint32_t>(s.window.size()));
  const std::uint32_t n = s.n_kept();
  for (std::uint32_t i = 0; i < n; ++i) {
    const TokenMeta& m = s.meta(i);
    w.put(m.pos);
    w.put(m.token);
    w.put(m.score);
    w.put(m.sink_heads);
    w.put(static_cast<std::uint8_t>(m.pin));
  }
  const std::size_t sw = s.config.token_state_floats;
  w.bytes(reinterpret_cast<const std::byte*>(s.pinned_state.data()), s.pinned_state.size() * sizeof(float));
  for (std::size_t i = 0; i < s.window.size() && sw > 0; ++i) {
    const std::span<const float> row = s.window_state.row(i);
    w.bytes(reinterpret_cast<const std::byte*>(row.data()), sw * sizeof(float));
  }
  const auto n_pinned = static_cast<std::uint32_t>(s.pinned.size());
  const std::uint32_t window_slots =
      s.window.empty() ? 0 : s.front + static_cast<std::uint32_t>(s.window.size());
  for (std::uint32_t il = 0; il < s.layers.size(); ++il) {
    const detail::LayerPages& lp = s.layers[il];
    for (PageId id : lp.pinned) w.bytes(s.pool->data(id), s.lay(Region::pinned).page_bytes());
    for (PageId id : lp.window) w.bytes(s.pool->data(id), s.lay(Region::window).page_bytes());
    for (Region rg : {Region::pinned, Region::window}) {
      if (s.lay(rg).dtype != DType::q4) continue;
      const bool pinned = rg == Region::pinned;
      const std::uint32_t P = s.P(rg);
      const std::uint32_t slots = pinned ? n_pinned : window_slots;
      const std::size_t pages = pinned ? lp.pinned.size() : lp.window.size();
      const detail::KeyStage& st = s.stage(il, rg);
      std::uint32_t staged = 0;
      if (pages > 0 && st.page == (pinned ? lp.pinned.back() : lp.window.back())) {
        staged = std::min(st.n, slots - static_cast<std::uint32_t>(pages - 1) * P);
      }
      w.put(staged);
      for (std::uint32_t h = 0; h < s.config.n_kv_heads && staged > 0; ++h) {
        w.bytes(reinterpret_cast<const std::byte*>(st.rows.data() + std::size_t{h} * P * s.config.head_dim),
                std::size_t{staged} * s.config.head_dim * sizeof(std::uint16_t));
      }
    }
  }
  w.put(fnv1a(w.buf.data(), w.buf.size()));

  // Temporary file beside the target, so the rename is atomic on the same file system.
  const std::string name = path.string();
  const std::string tmp = name + ".tmp." + std::to_string(std::random_device{}());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("snapshot " + name + ": cannot create " + tmp + ": " + std::strerror(errno));
  try {
    write_all(fd, w.buf, name);
    if (::fsync(fd) != 0) throw Error("snapshot " + name + ": fsync failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), name.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("snapshot " + name + ": rename failed: " + std::strerror(err));
  }
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // make the rename durable; a file system without directory fsync is not an error
    ::fsync(dfd);
    ::close(dfd);
  }
}

void StreamCache::restore(const std::filesystem::path& path) {
  if (!state_) throw InvalidArgument("StreamCache: used after being moved from");
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError("snapshot " + name + ": cannot open: " + std::strerror(errno));
  std::vector<std::byte> data;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw FormatError("snapshot " + name + ": cannot read its size");
  in.seekg(0);
  data.resize(static_cast<std::size_t>(size));
  if (!in.read(reinterpret_cast<char*>(data.data()), size))
    throw FormatError("snapshot " + name + ": read failed");

  if (data.size() < sizeof kMagic + 8 + 8)
    throw FormatError("snapshot " + name + ": truncated (" + std::to_string(data.size()) + " bytes)");
  if (std::memcmp(data.data(), kMagic, sizeof kMagic) != 0)
    throw FormatError("snapshot " + name + ": not a kvcache snapshot (bad magic)");
  Reader r(data, data.size() - 8, name);
  r.need(sizeof kMagic, "magic");
  const auto version = r.get<std::uint32_t>("version");
  if (version < 1 || version > kVersion)
    r.fail("unsupported version " + std::to_string(version) + " (this build reads 1 to " +
           std::to_string(kVersion) + ")");
  std::uint64_t stored_sum;
  std::memcpy(&stored_sum, data.data() + data.size() - 8, 8);
  if (stored_sum != fnv1a(data.data(), data.size() - 8)) {
    throw FormatError("snapshot " + name + ": checksum mismatch (corrupted or truncated)");
  }
  const auto front = r.get<std::uint32_t>("window front");
  const StreamConfig& cfg = state_->config;
  check_config(r, cfg, version);

  // Build the restored stream on the side; swap it in only when complete.
  StreamCache fresh(state_->pool, cfg);
  State& s = *fresh.state_;
  s.seen = r.get<std::uint64_t>("tokens seen");
  s.evicted = r.get<std::uint64_t>("tokens evicted");
  s.peak_bytes = r.get<std::uint64_t>("peak bytes");
  const auto n_pinned = r.get<std::uint32_t>("n_pinned");
  const auto n_window = r.get<std::uint32_t>("n_window");
  const std::uint64_t n = std::uint64_t{n_pinned} + n_window;
  if (n > s.policy->budget() || n > s.seen)
    r.fail("holds " + std::to_string(n) + " tokens, more than its budget or tokens seen");
  // Every token ever admitted is either kept or was evicted (a released pinned token counts).
  if (s.evicted != s.seen - n) {
    r.fail("counters disagree: " + std::to_string(s.seen) + " tokens seen, " + std::to_string(n) + " kept, " +
           std::to_string(s.evicted) + " evicted");
  }
  const std::uint32_t Pp = s.P(Region::pinned), Pw = s.P(Region::window);
  if (front >= Pw || (n_window == 0 && front != 0))
    r.fail("window front " + std::to_string(front) + " out of range");
  const std::size_t sw = cfg.token_state_floats;
  // Per token: metadata and state; checked by division before anything is allocated.
  const std::uint64_t per_token = kMetaBytes + sw * sizeof(float);
  if (n > r.remaining() / per_token) {
    r.fail("holds " + std::to_string(n) + " tokens of " + std::to_string(per_token) +
           " bytes, more than the file");
  }
  std::uint32_t n_hidden = 0, n_heavy = 0;  // pins made after arrival, by reason
  for (std::uint64_t i = 0; i < n; ++i) {
    TokenMeta m;
    m.pos = r.get<std::int64_t>("token position");
    m.token = r.get<std::int32_t>("token id");
    m.score = r.get<float>("token score");
    m.sink_heads = r.get<std::uint16_t>("token sink_heads");
    const auto pin = r.get<std::uint8_t>("token pin reason");
    if (pin > static_cast<std::uint8_t>(PinReason::heavy_hitter))
      r.fail("bad pin reason " + std::to_string(pin));
    m.pin = static_cast<PinReason>(pin);
    const bool pinned = i < n_pinned;
    if (pinned == (m.pin == PinReason::none))
      r.fail("token " + std::to_string(i) + " pin reason does not match its region");
    if (m.pos < 0 || static_cast<std::uint64_t>(m.pos) >= s.seen) r.fail("token position out of range");
    // The pin must be one this stream's policy could have made: initial sinks are exactly the
    // positions it pins on arrival (a window token among them would put later arrivals out of
    // order), and only hidden-sinks and h2o pin tokens later, each up to its cap (beyond it the
    // pinned region could fill the budget and no token could be admitted).
    const bool arrival_pin = s.policy->on_arrival(m.pos) != PinReason::none;
    if (arrival_pin != (m.pin == PinReason::initial))
      r.fail("token " + std::to_string(i) + " pin reason does not match its position");
    if (m.pin == PinReason::hidden_sink &&
        ++n_hidden > (cfg.policy.kind == PolicyKind::hidden_sinks ? cfg.policy.hidden_sinks : 0)) {
      r.fail("more hidden sinks pinned than the policy allows");
    }
    if (m.pin == PinReason::heavy_hitter &&
        ++n_heavy > (cfg.policy.kind == PolicyKind::h2o ? s.policy->config().heavy : 0)) {
      r.fail("more heavy hitters pinned than the policy allows");
    }
    const TokenMeta* prev = i == 0 ? nullptr : (i - 1 < n_pinned ? &s.pinned.back() : &s.window.back());
    if (prev != nullptr && m.pos <= prev->pos) r.fail("token positions are not increasing");
    if (!pinned && i > n_pinned && m.pos != prev->pos + 1) r.fail("window positions are not consecutive");
    if (!std::isfinite(m.score)) r.fail("token score is not finite");
    if (pinned) {
      s.pinned.push_back(m);
    } else {
      s.window.push_back(m);
    }
  }
  s.pinned_state.resize(std::size_t{n_pinned} * sw);
  const std::byte* pinned_src = r.need(s.pinned_state.size() * sizeof(float), "pinned state");
  // An empty vector's data() may be null, and memcpy from or to null is undefined even for 0 bytes.
  if (!s.pinned_state.empty())
    std::memcpy(s.pinned_state.data(), pinned_src, s.pinned_state.size() * sizeof(float));
  for (std::uint32_t i = 0; i < n_window; ++i) {
    s.window_state.push_back_zero();
    const std::byte* src = r.need(sw * sizeof(float), "window state");
    if (sw > 0) std::memcpy(s.window_state.row(i).data(), src, sw * sizeof(float));
  }
  const std::uint32_t window_slots = n_window == 0 ? 0 : front + n_window;
  const std::size_t pinned_pages = (n_pinned + Pp - 1) / Pp;
  const std::size_t window_pages = (std::size_t{window_slots} + Pw - 1) / Pw;
  const std::size_t layer_page_bytes =
      version >= 3 ? pinned_pages * s.lay(Region::pinned).page_bytes() +
                         window_pages * s.lay(Region::window).page_bytes()
                   : std::size_t{2} * n * cfg.n_kv_heads * s.lay(Region::window).row_bytes();
  if (layer_page_bytes > 0 && s.layers.size() > r.remaining() / layer_page_bytes)
    r.fail("page data is shorter than its " + std::to_string(n) + " tokens need");
  detail::PageBatch batch(*s.pool);
  batch.acquire((pinned_pages + window_pages) * s.layers.size());
  for (detail::LayerPages& lp : s.layers) {
    for (std::size_t i = 0; i < pinned_pages; ++i) lp.pinned.push_back(batch.take());
    for (std::size_t i = 0; i < window_pages; ++i) lp.window.push_back(batch.take());
  }
  s.front = front;
  if (version < 3) {
    // One f32 or f16 dtype (checked with the config), rows per token: copy them into their slots.
    const std::size_t row_bytes = s.lay(Region::window).row_bytes();
    for (std::uint32_t il = 0; il < s.layers.size(); ++il) {
      for (std::uint32_t i = 0; i < n; ++i) {
        const State::Where w = s.locate(il, i);
        const PageLayout& lay = s.lay(w.region);
        for (std::uint32_t h = 0; h < cfg.n_kv_heads; ++h) {
          std::memcpy(s.pool->data(w.page) + lay.k_offset(h, w.slot), r.need(row_bytes, "K rows"), row_bytes);
          std::memcpy(s.pool->data(w.page) + lay.v_offset(h, w.slot), r.need(row_bytes, "V rows"), row_bytes);
        }
      }
    }
  }
  for (std::uint32_t il = 0; il < s.layers.size() && version >= 3; ++il) {
    detail::LayerPages& lp = s.layers[il];
    for (PageId id : lp.pinned) {
      const std::size_t b = s.lay(Region::pinned).page_bytes();
      std::memcpy(s.pool->data(id), r.need(b, "pinned pages"), b);
    }
    for (PageId id : lp.window) {
      const std::size_t b = s.lay(Region::window).page_bytes();
      std::memcpy(s.pool->data(id), r.need(b, "window pages"), b);
    }
    for (Region rg : {Region::pinned, Region::window}) {
      if (s.lay(rg).dtype != DType::q4) continue;
      const bool pinned = rg == Region::pinned;
      const std::uint32_t P = s.P(rg);
      const std::size_t pages = pinned ? pinned_pages : window_pages;
      const std::uint32_t slots = pinned ? n_pinned : window_slots;
      const auto staged = r.get<std::uint32_t>("staged key rows");
      if (staged > 0 && (pages == 0 || staged > slots - (pages - 1) * P))
        r.fail("staged key rows " + std::to_string(staged) + " exceed the rows of the last page");
      detail::KeyStage& st = s.stage(il, rg);
      if (pages > 0) st.rows.resize(std::size_t{P} * s.token_floats());
      st.n = staged;
      st.page = pages > 0 ? (pinned ? lp.pinned.back() : lp.window.back()) : 0;
      const std::size_t row_bytes = std::size_t{staged} * cfg.head_dim * sizeof(std::uint16_t);
      for (std::uint32_t h = 0; h < cfg.n_kv_heads; ++h) {
        const std::byte* src = r.need(row_bytes, "staged key rows");
        if (row_bytes > 0) std::memcpy(st.rows.data() + std::size_t{h} * P * cfg.head_dim, src, row_bytes);
      }
    }
  }
  if (r.remaining() != 0) r.fail(std::to_string(r.remaining()) + " bytes left over after the page data");
  s.peak_bytes = std::max(s.peak_bytes, s.pages_held() * s.pool->page_bytes());
  *this = std::move(fresh);
}

}  // namespace kvcache
