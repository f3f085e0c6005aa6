// Pre-tokenized token shards as llama2.c's `tinystories.py pretokenize` writes them: a flat array
// of uint16 little-endian token ids, no header (stories are concatenated, each starting with BOS).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace kvcache::llama {

/// Reads every token id of `path`. Throws kvcache::FormatError naming the file when its length
/// is odd (field 'length'), when it is empty, or when an id is >= vocab_size (naming the id and
/// its byte offset); kvcache::Error when the file cannot be opened.
std::vector<std::int32_t> read_token_file(const std::filesystem::path& path, std::uint32_t vocab_size);

/// Writes `tokens` to `path` in the same format (replacing the file): first to a temporary file
/// beside it, then renamed into place, so a failure leaves no partial file. Throws
/// kvcache::InvalidArgument when `tokens` is empty or an id is outside [0, 65535] (nothing is
/// written), kvcache::Error naming the path when the file cannot be written.
void write_token_file(const std::filesystem::path& path, std::span<const std::int32_t> tokens);

}  // namespace kvcache::llama
