// StreamCache: the paged KV cache of one sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "kvcache/page_layout.h"
#include "kvcache/page_pool.h"
#include "kvcache/policy.h"
#include "kvcache/rope.h"

namespace kvcache {

/// How a kept token's position (the one RoPE sees) is chosen.
enum class PositionMode : std::uint8_t {
  reindexed,  ///< its index in the cache (StreamingLLM): positions never exceed the budget
  absolute,   ///< its original position in the stream
};

/// Mixed precision by region: the window (most tokens) is stored as `dtype` in pages of
/// `page_tokens` tokens, which sets the pool's page size (layout().page_bytes()); the pinned region
/// (sinks, heavy hitters) is stored as `pinned_dtype` in pages of the same byte size, holding as
/// many tokens as fit (pinned_layout()). One pool page size serves both regions, and the window,
/// where the memory is, wastes nothing. A token moving from the window to the pinned region is
/// re-stored at the pinned precision from its dequantised value (what attention saw); a q4 key of
/// a page still being filled is re-stored from the f16 copy the stream holds (see below).
///
/// q4 keys are quantised per channel over the tokens of a page (kvcache/quant.h), so a page's key
/// parameters depend on every token in it. While a q4 page is being filled, the stream keeps an
/// f16 copy of its keys (outside the pool; StreamStats::staging_bytes) and re-quantises the page's
/// keys from that copy on every append: the page is at all times exactly the per-channel
/// quantisation of its tokens (KIVI's full-precision residual, but attention reads only q4 pages).
struct StreamConfig {
  std::uint32_t n_layers = 0;
  std::uint32_t n_kv_heads = 0;
  std::uint32_t head_dim = 0;      ///< even when RoPE is on or a region is q4
  std::uint32_t page_tokens = 16;  ///< tokens per window page
  DType dtype = DType::f32;        ///< storage of the window (and of the pinned region if unset)
  PositionMode positions = PositionMode::reindexed;
  RopeConfig rope;
  PolicyConfig policy;
  /// Floats of observer state kept per token and moved with it (a SinkDetector needs
  /// SinkDetector::state_floats()); zero-initialised when the token arrives.
  std::uint32_t token_state_floats = 0;
  /// Storage of the pinned region; unset = `dtype`.
  std::optional<DType> pinned_dtype = std::nullopt;

  /// The window's page layout; its page_bytes() is the pool page size streams of this config need.
  PageLayout layout() const { return {page_tokens, n_kv_heads, head_dim, dtype}; }
  /// The pinned region's dtype.
  DType pinned() const { return pinned_dtype.value_or(dtype); }
  /// The pinned region's layout: pinned() in pages of layout().page_bytes(), as many tokens as fit
  /// (page_tokens when the dtypes are equal). page_tokens is 0 when not one token fits (the
  /// StreamCache constructor then throws).
  PageLayout pinned_layout() const;
};

/// A kept token as seen from outside, in cache order.
struct KeptToken {
  TokenMeta meta;              ///< original position, token id, score, pin reason
  std::int64_t cache_pos = 0;  ///< the position RoPE sees for it now
};

/// A run of kept tokens stored in consecutive slots of one page, for attention kernels.
/// Keys are stored rotated by their *stored* position; the position RoPE must see is
/// stored + rot_delta, the same for the whole span. A kernel rotates the query once per
/// distinct rot_delta (by query_pos - rot_delta) instead of rotating every key.
struct KvSpan {
  const std::byte* page = nullptr;  ///< page start
  PageLayout layout;                ///< the page's layout (the window's or the pinned region's)
  std::uint32_t slot_begin = 0;     ///< first slot used in the page
  std::uint32_t n = 0;              ///< slots used: [slot_begin, slot_begin + n)
  std::uint32_t kept_begin = 0;     ///< cache index of the first token of the span
  std::int64_t rot_delta = 0;       ///< cache_pos - stored rotation position
};

struct StreamStats {
  std::uint64_t tokens_seen = 0;     ///< tokens ever admitted by begin()
  std::uint32_t tokens_kept = 0;     ///< tokens in the cache now
  std::uint32_t tokens_pinned = 0;   ///< of which pinned
  std::uint64_t tokens_evicted = 0;  ///< tokens dropped so far
  std::size_t pages = 0;             ///< pages held, all layers
  std::size_t kv_bytes = 0;          ///< pages * page bytes (memory held, slack included)
  std::size_t kv_bytes_peak = 0;     ///< maximum of kv_bytes ever
  /// Bytes held outside the pool for the f16 copies of keys of q4 pages being filled: layers x
  /// heads x page tokens x head_dim x 2 for each q4 region that has stored a token (allocated
  /// once, then constant); 0 without q4.
  std::size_t staging_bytes = 0;
};

/// The paged KV cache of one sequence: per-layer page tables, per-token metadata, a pinned
/// region (compacted into pinned pages) and a rolling window (a ring of pages whose oldest page
/// is partly consumed; whole pages go back to the pool as soon as they empty, so eviction is
/// O(1) per token with no memmove).
///
/// Protocol per step: begin(ids) admits n tokens (the policy evicts or pins what must go, then
/// slots are reserved in every layer); append(layer, k, v) then writes their K and V, once per
/// layer; attention may read a layer once its append is done. Keys are given before RoPE; the
/// cache rotates them (see KvSpan). Under reindexed positions, pinned tokens occupy cache
/// positions 0..n_pinned-1 and window tokens follow in order.
///
/// Thread safety: one StreamCache must not be used from two threads at once; different streams
/// (sharing one PagePool or not) may be used concurrently.
/// Errors: InvalidArgument for bad config or arguments, PoolExhausted when the pool cannot
/// supply pages; either way the stream is unchanged and stays usable.
class StreamCache {
 public:
  StreamCache(std::shared_ptr<PagePool> pool, const StreamConfig& config);
  ~StreamCache();
  StreamCache(StreamCache&&) noexcept;
  StreamCache& operator=(StreamCache&&) noexcept;
  StreamCache(const StreamCache&) = delete;
  StreamCache& operator=(const StreamCache&) = delete;

  /// Admits `token_ids.size()` new tokens (>= 1). Requires every layer of the previous batch to
  /// be appended, and the batch to fit in the budget beside the pinned region. Eviction is
  /// planned for the whole batch at once: a batch that causes no eviction is exactly equivalent
  /// to single-token steps (use such batches for exact prefill).
  void begin(std::span<const std::int32_t> token_ids);
  /// Writes K and V of the tokens admitted by the last begin() for `layer`.
  /// k, v: n_pending x n_kv_heads x head_dim floats (token-major), k before RoPE.
  void append(std::uint32_t layer, std::span<const float> k, std::span<const float> v);

  /// Tokens admitted by the last begin().
  std::uint32_t n_pending() const noexcept;
  /// Whether `layer` holds the K/V of the pending tokens (always true with no pending tokens).
  bool layer_ready(std::uint32_t layer) const;
  std::uint32_t n_kept() const noexcept;
  std::uint32_t n_pinned() const noexcept;
  /// Kept tokens in cache order (pinned first, then the window).
  std::vector<KeptToken> tokens() const;
  /// The position RoPE sees for the token at cache index `index`.
  std::int64_t cache_position(std::uint32_t index) const;

  /// Spans covering kept tokens [0, n_kept) of `layer` in cache order, written into `out`
  /// (cleared first; reuse it to avoid allocation). Pointers stay valid until the next begin().
  void layer_spans(std::uint32_t layer, std::vector<KvSpan>& out) const;
  /// Key of cache index `index`, `kv_head`, rotated to its cache position, as f32.
  void read_key(std::uint32_t layer, std::uint32_t index, std::uint32_t kv_head, std::span<float> out) const;
  /// Value of cache index `index`, `kv_head`, as f32.
  void read_value(std::uint32_t layer, std::uint32_t index, std::uint32_t kv_head,
                  std::span<float> out) const;

  /// Mutable observer data of one kept token: its score, sink_heads and state row. Pointers stay
  /// valid until the next begin(). Policies read these at the next begin().
  struct Observed {
    float* score;
    std::uint16_t* sink_heads;
    std::span<float> state;  ///< token_state_floats floats
    std::int64_t pos;        ///< original position (read-only)
  };
  Observed observed(std::uint32_t index);

  /// Adds `mass[i]` to the score of cache index i (attention received; used by h2o and the
  /// sink detector). `mass.size()` must equal n_kept().
  void add_scores(std::span<const float> mass);
  /// Sets sink_heads of cache index i to `heads[i]` (from a SinkDetector). Size must be n_kept().
  void set_sink_heads(std::span<const std::uint16_t> heads);

  /// Writes the stream (K/V of every kept token, metadata, observer/detector state, counters) to
  /// `path` atomically: a temporary file beside it is written, fsynced and renamed over `path`,
  /// then the directory is fsynced. Format (little-endian): magic "KVCSNAP", version, the full
  /// StreamConfig, counters, per-token metadata and state, K/V rows, FNV-1a-64 checksum.
  /// Requires every layer appended. Throws InvalidArgument (pending tokens) or Error (I/O; the
  /// temporary file is removed and `path` is left as it was).
  void save(const std::filesystem::path& path) const;
  /// Replaces this stream's contents with the snapshot at `path`, whose configuration must equal
  /// this stream's. Throws FormatError naming the file and what is wrong (missing, truncated,
  /// bad magic/version/checksum, a config field that differs, inconsistent metadata) or
  /// PoolExhausted; on any error this stream is unchanged.
  void restore(const std::filesystem::path& path);

  /// Throw InvalidArgument on a moved-from stream.
  const StreamConfig& config() const;
  const Policy& policy() const;
  StreamStats stats() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kvcache
