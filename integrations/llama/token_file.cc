#include "llama/token_file.h"

#include <string>

#include "kvcache/error.h"
#include "llama/binary_io.h"

namespace kvcache::llama {

std::vector<std::int32_t> read_token_file(const std::filesystem::path& path, std::uint32_t vocab_size) {
  constexpr std::string_view kWhat = "token file";
  const std::vector<std::byte> data = read_file_bytes(path, kWhat);
  const std::string label = file_label(kWhat, path);
  if (data.empty()) throw FormatError(label + ": field 'length' is 0: the file holds no tokens");
  if (data.size() % 2 != 0) {
    throw FormatError(label + ": field 'length' = " + std::to_string(data.size()) +
                      " bytes is odd; tokens are uint16 little-endian");
  }
  std::vector<std::int32_t> tokens(data.size() / 2);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto lo = static_cast<unsigned>(data[2 * i]), hi = static_cast<unsigned>(data[2 * i + 1]);
    const unsigned id = lo | (hi << 8);
    if (id >= vocab_size) {
      throw FormatError(label + ": token id " + std::to_string(id) + " at byte offset " +
                        std::to_string(2 * i) + " (token " + std::to_string(i) +
                        ") is out of range for vocab_size " + std::to_string(vocab_size));
    }
    tokens[i] = static_cast<std::int32_t>(id);
  }
  return tokens;
}

void write_token_file(const std::filesystem::path& path, std::span<const std::int32_t> tokens) {
  if (tokens.empty())
    throw InvalidArgument("write_token_file: no tokens to write to '" + path.string() + "'");
  std::vector<unsigned char> bytes(tokens.size() * 2);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > 0xFFFF) {
      throw InvalidArgument("write_token_file: token " + std::to_string(i) + " = " +
                            std::to_string(tokens[i]) + " does not fit uint16");
    }
    const auto id = static_cast<unsigned>(tokens[i]);
    bytes[2 * i] = static_cast<unsigned char>(id & 0xFFu);
    bytes[2 * i + 1] = static_cast<unsigned char>(id >> 8);
  }
  write_file_atomically(path, std::as_bytes(std::span(bytes)), "token file");
}

}  // namespace kvcache::llama
