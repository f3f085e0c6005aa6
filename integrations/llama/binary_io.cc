#include "llama/binary_io.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "kvcache/error.h"

namespace kvcache::llama {

std::string file_label(std::string_view what, const std::filesystem::path& path) {
  return std::string(what) + " '" + path.string() + "'";
}

std::uint64_t regular_file_size(const std::filesystem::path& path, std::string_view what) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw Error(file_label(what, path) + ": file not found");
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw Error(file_label(what, path) + ": not a regular file");
  }
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(file_label(what, path) + ": cannot read its size: " + ec.message());
  return size;
}

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes,
                           std::string_view what) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (f) f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f || !f.flush()) {
      const std::string why = std::strerror(errno);
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw Error(file_label(what, path) + ": cannot write: " + why);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw Error(file_label(what, path) + ": cannot rename into place: " + ec.message());
  }
}

std::vector<std::byte> read_file_bytes(const std::filesystem::path& path, std::string_view what) {
  const std::uint64_t size = regular_file_size(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(file_label(what, path) + ": cannot open for reading");
  std::vector<std::byte> data(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
  // A file that shrank between stat and read is reported, never read past its end.
  if (static_cast<std::uint64_t>(in.gcount()) != size) {
    throw FormatError(file_label(what, path) + ": short read (file changed while loading?)");
  }
  return data;
}

ByteReader::ByteReader(std::span<const std::byte> data, const std::string& file, std::string_view what)
    : data_(data), label_(file_label(what, file)) {}

void ByteReader::fail(std::string_view message) const {
  throw FormatError(label_ + ": " + std::string(message));
}

std::span<const std::byte> ByteReader::bytes(std::size_t n, std::string_view field) {
  if (n > remaining()) {
    fail("truncated: field '" + std::string(field) + "' needs " + std::to_string(n) + " bytes at offset " +
         std::to_string(offset_) + ", but the file has " + std::to_string(data_.size()) + " bytes");
  }
  const auto out = data_.subspan(offset_, n);
  offset_ += n;
  return out;
}

std::int32_t ByteReader::i32(std::string_view field) {
  std::int32_t v;
  std::memcpy(&v, bytes(sizeof v, field).data(), sizeof v);
  return v;
}

float ByteReader::f32(std::string_view field) {
  float v;
  std::memcpy(&v, bytes(sizeof v, field).data(), sizeof v);
  return v;
}

}  // namespace kvcache::llama
