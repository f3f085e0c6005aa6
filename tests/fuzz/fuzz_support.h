// Helpers shared by the fuzz targets and the seed generator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

/// An invariant of the code under test: on failure print where and abort, so libFuzzer records
/// the input as a crash. (assert() would vanish under NDEBUG in RelWithDebInfo.)
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace kvcache {
class StreamCache;
}

namespace kvcache::fuzz {

/// An anonymous in-memory file (memfd) reachable by path as /proc/self/fd/N: the loaders take
/// paths, and a memfd costs no disk I/O, needs no cleanup, and is private to this process (so
/// parallel fuzzing jobs never share a file).
class MemFile {
 public:
  MemFile();
  ~MemFile();
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  /// Replaces the content with `data`.
  void write(std::span<const std::uint8_t> data);
  const std::filesystem::path& path() const { return path_; }

 private:
  int fd_ = -1;
  std::filesystem::path path_;
};

/// A per-process scratch directory on tmpfs when there is one (StreamCache::save writes a
/// temporary file beside its target and renames it, so it needs a real directory, not a memfd).
/// Created on first use, removed at exit.
const std::filesystem::path& scratch_dir();

/// FNV-1a-64, the snapshot checksum (kvcache/stream/stream_snapshot.cc).
std::uint64_t fnv1a64(const std::uint8_t* data, std::size_t n);
/// Overwrites the last 8 bytes of a snapshot with the checksum of everything before them, so
/// mutated snapshots get past the checksum test to the parser. No-op below 8 bytes.
void patch_snapshot_checksum(std::vector<std::uint8_t>& snapshot);

/// A valid llama2.c tokenizer file: <unk>, BOS, EOS, the 256 byte pieces, the printable ASCII
/// characters and a few merges (" t", "th", "the", " the", ...). Vocabulary size in *vocab_size.
std::vector<std::uint8_t> synthetic_tokenizer(std::uint32_t* vocab_size);
/// A valid llama2.c checkpoint (dim 8, hidden 16, 1 layer, 2 heads, `n_kv_heads` KV heads,
/// vocab 259 (the loader's minimum: 3 specials + 256 byte tokens), seq_len 8), with a separate
/// classifier when `separate_classifier`. Weights are small deterministic values.
std::vector<std::uint8_t> synthetic_checkpoint(std::uint32_t n_kv_heads, bool separate_classifier);

/// Everything observable about a stream (stats, kept tokens and their metadata, cache positions,
/// every K and V row of every layer) hashed to one value: equal before and after a call that
/// threw means the call left the stream unchanged, as the API promises.
/// With `content_only`, what a snapshot preserves: the tokens, their metadata and K/V, and the
/// counters, but not the memory layout (restore packs the window from slot 0, so it may hold a
/// page fewer) nor n_pending() (a restored stream has no batch in progress).
std::uint64_t stream_fingerprint(const StreamCache& cache, bool content_only = false);

/// Checks the invariants a stream must hold between calls, aborting on a violation: kept tokens
/// within the budget, pinned tokens first and only there, original positions increasing and the
/// window consecutive, cache positions as the position mode defines them, kv_bytes consistent.
void check_stream_invariants(const StreamCache& cache);

}  // namespace kvcache::fuzz
