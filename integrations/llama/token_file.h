// Pre-tokenized token shards as llama2.c's `tinystories.py pretokenize` writes them: a flat array
// of uint16 little-endian token ids, no header (stories are concatenated, each starting with BOS).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace kvcache::llama {

/// Reads every token id of `path`. Throws kvcache::FormatError naming the file when its length
/// is odd (field 'length'), when it is empty, or when an id is >= vocab_size (naming the id and
/// its byte offset); kvcache::Error when the file cannot be opened.
std::vector<std::int32_t> read_token_file(const std::filesystem::path& path, std::uint32_t vocab_size);

}  // namespace kvcache::llama
