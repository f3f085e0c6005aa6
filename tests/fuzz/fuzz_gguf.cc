// Fuzzes the GGUF reader (integrations/llama/gguf_file.h) with arbitrary files, and the writer
// with whatever the reader accepts.
//
// Contract under test: GgufFile::open either throws kvcache::Error (FormatError for a bad file)
// or returns a file whose every key can be read with the getter of its type, whose tensors have
// exactly the bytes their type and dims imply, lie inside the file, are aligned and do not
// overlap. An accepted file whose arrays the writer can express is written again with GgufWriter
// and must read back with the same keys, values and tensors. Any other exception, crash, leak or
// sanitizer report is a finding.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "kvcache/error.h"
#include "llama/gguf_file.h"
#include "llama/gguf_writer.h"

namespace {

using kvcache::llama::GgmlType;
using kvcache::llama::GgufFile;
using kvcache::llama::GgufTensor;
using kvcache::llama::GgufValueType;
using kvcache::llama::GgufWriter;

bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::u8 || t == GgufValueType::u16 || t == GgufValueType::u32 ||
         t == GgufValueType::u64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::i8 || t == GgufValueType::i16 || t == GgufValueType::i32 ||
         t == GgufValueType::i64;
}

// Reads every key with the getter of its type (and a wrong one, which must throw FormatError).
// Returns whether the writer can express every value (its arrays are string/f32/i32/u32 only).
bool read_all_keys(const GgufFile& f) {
  bool writable = true;
  for (std::string_view key : f.keys()) {
    const std::optional<GgufValueType> t = f.type_of(key);
    FUZZ_CHECK(t.has_value());
    FUZZ_CHECK(f.describe(key).has_value());
    if (*t == GgufValueType::string) {
      FUZZ_CHECK(f.get_string(key).has_value());
    } else if (is_unsigned(*t)) {
      FUZZ_CHECK(f.get_uint(key).has_value());
    } else if (is_signed(*t)) {
      FUZZ_CHECK(f.get_int(key).has_value());
    } else if (*t == GgufValueType::f32 || *t == GgufValueType::f64) {
      FUZZ_CHECK(f.get_float(key).has_value());
    } else if (*t == GgufValueType::boolean) {
      FUZZ_CHECK(f.get_bool(key).has_value());
    } else {
      const auto info = f.array_info(key);
      FUZZ_CHECK(info.has_value() && info->type != GgufValueType::array);
      if (info->type == GgufValueType::string) {
        FUZZ_CHECK(f.get_string_array(key)->size() == info->size);
      } else if (info->type == GgufValueType::f32) {
        FUZZ_CHECK(f.get_f32_array(key)->size() == info->size);
      } else if (info->type == GgufValueType::i32) {
        FUZZ_CHECK(f.get_i32_array(key)->size() == info->size);
      } else if (info->type == GgufValueType::u32) {
        FUZZ_CHECK(f.get_u32_array(key)->size() == info->size);
      } else {
        writable = false;
      }
    }
    try {
      if (*t == GgufValueType::string) {
        (void)f.get_bool(key);
      } else {
        (void)f.get_string(key);
      }
      FUZZ_CHECK(false);  // a getter of the wrong type must throw
    } catch (const kvcache::FormatError&) {
    }
  }
  return writable;
}

void check_tensors(const GgufFile& f, std::size_t size) {
  FUZZ_CHECK(f.data_offset() % f.alignment() == 0);
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : f.tensors()) {
    FUZZ_CHECK(f.find_tensor(t.name) == &t);
    FUZZ_CHECK(!t.dims.empty() && t.dims.size() <= 4);
    const std::uint32_t block = kvcache::llama::ggml_block_elems(t.type);
    FUZZ_CHECK(t.dims[0] % block == 0);
    FUZZ_CHECK(t.data.size() == t.n_elements() / block * kvcache::llama::ggml_block_bytes(t.type));
    FUZZ_CHECK(t.offset % f.alignment() == 0);
    FUZZ_CHECK(f.data_offset() + t.offset + t.data.size() <= size);
    const auto addr = reinterpret_cast<std::uintptr_t>(t.data.data());
    FUZZ_CHECK(addr % (t.type == GgmlType::f32 ? 4 : 2) == 0);
    // Touch every byte, so ASan sees a span that leaves the mapping.
    unsigned sum = 0;
    for (std::byte b : t.data) sum += static_cast<unsigned>(b);
    (void)sum;
    try {
      const kvcache::llama::WeightMatrix m = t.matrix();
      FUZZ_CHECK(m.bytes() == t.data.size() && m.data == t.data.data());
    } catch (const kvcache::FormatError&) {
      FUZZ_CHECK(t.dims[0] > 0xffffffffu || t.n_elements() / t.dims[0] > 0xffffffffu);
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    FUZZ_CHECK(by_offset[i - 1]->offset + by_offset[i - 1]->data.size() <= by_offset[i]->offset);
  }
}

bool same_float(double a, double b) {
  return a == b ? std::signbit(a) == std::signbit(b) : std::isnan(a) && std::isnan(b);
}

// Whether `key` has the same type and value in both files (floats bitwise up to NaN payloads).
bool same_value(const GgufFile& f, const GgufFile& g, std::string_view key) {
  const GgufValueType t = *f.type_of(key);
  if (g.type_of(key) != t) return false;
  if (t == GgufValueType::string) return f.get_string(key) == g.get_string(key);
  if (is_unsigned(t)) return f.get_uint(key) == g.get_uint(key);
  if (is_signed(t)) return f.get_int(key) == g.get_int(key);
  if (t == GgufValueType::boolean) return f.get_bool(key) == g.get_bool(key);
  if (t != GgufValueType::array) return same_float(*f.get_float(key), *g.get_float(key));
  const GgufValueType e = f.array_info(key)->type;
  if (g.array_info(key)->type != e) return false;
  if (e == GgufValueType::string) return f.get_string_array(key) == g.get_string_array(key);
  if (e == GgufValueType::i32) return f.get_i32_array(key) == g.get_i32_array(key);
  if (e == GgufValueType::u32) return f.get_u32_array(key) == g.get_u32_array(key);
  const auto a = *f.get_f32_array(key), b = *g.get_f32_array(key);
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), same_float);
}

// Writes `f` again with GgufWriter (general.alignment through the constructor) and reads it back.
void round_trip(const GgufFile& f) {
  GgufWriter w(f.alignment());
  for (std::string_view key : f.keys()) {
    if (key == "general.alignment") continue;
    switch (*f.type_of(key)) {
      case GgufValueType::u8:
        w.add_u8(key, static_cast<std::uint8_t>(*f.get_uint(key)));
        break;
      case GgufValueType::i8:
        w.add_i8(key, static_cast<std::int8_t>(*f.get_int(key)));
        break;
      case GgufValueType::u16:
        w.add_u16(key, static_cast<std::uint16_t>(*f.get_uint(key)));
        break;
      case GgufValueType::i16:
        w.add_i16(key, static_cast<std::int16_t>(*f.get_int(key)));
        break;
      case GgufValueType::u32:
        w.add_u32(key, static_cast<std::uint32_t>(*f.get_uint(key)));
        break;
      case GgufValueType::i32:
        w.add_i32(key, static_cast<std::int32_t>(*f.get_int(key)));
        break;
      case GgufValueType::u64:
        w.add_u64(key, *f.get_uint(key));
        break;
      case GgufValueType::i64:
        w.add_i64(key, *f.get_int(key));
        break;
      case GgufValueType::f32:
        w.add_f32(key, static_cast<float>(*f.get_float(key)));
        break;
      case GgufValueType::f64:
        w.add_f64(key, *f.get_float(key));
        break;
      case GgufValueType::boolean:
        w.add_bool(key, *f.get_bool(key));
        break;
      case GgufValueType::string:
        w.add_string(key, *f.get_string(key));
        break;
      case GgufValueType::array: {
        const GgufValueType e = f.array_info(key)->type;
        if (e == GgufValueType::string) w.add_string_array(key, *f.get_string_array(key));
        if (e == GgufValueType::f32) w.add_f32_array(key, *f.get_f32_array(key));
        if (e == GgufValueType::i32) w.add_i32_array(key, *f.get_i32_array(key));
        if (e == GgufValueType::u32) w.add_u32_array(key, *f.get_u32_array(key));
        break;
      }
    }
  }
  for (const GgufTensor& t : f.tensors()) w.add_tensor(t.name, t.type, t.dims, t.data);
  static kvcache::fuzz::MemFile again;
  const std::vector<std::byte> bytes = w.bytes();
  again.write({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
  const auto g = GgufFile::open(again.path());
  FUZZ_CHECK(g->alignment() == f.alignment());
  std::vector<std::string_view> fk = f.keys(), gk = g->keys();
  std::erase(fk, "general.alignment");
  std::erase(gk, "general.alignment");
  FUZZ_CHECK(fk == gk);
  for (std::string_view key : fk) FUZZ_CHECK(same_value(f, *g, key));
  FUZZ_CHECK(g->tensors().size() == f.tensors().size());
  for (std::size_t i = 0; i < f.tensors().size(); ++i) {
    const GgufTensor &x = f.tensors()[i], &y = g->tensors()[i];
    FUZZ_CHECK(x.name == y.name && x.type == y.type && x.dims == y.dims);
    FUZZ_CHECK(std::equal(x.data.begin(), x.data.end(), y.data.begin(), y.data.end()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Counts and lengths are checked against the file size before anything is allocated, so the
  // input size bounds the work; cap it to keep one run in milliseconds.
  if (size > (std::size_t{1} << 20)) return 0;
  static kvcache::fuzz::MemFile file;
  file.write({data, size});
  std::shared_ptr<const GgufFile> f;
  try {
    f = GgufFile::open(file.path());
  } catch (const kvcache::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  FUZZ_CHECK(f->version() == 2 || f->version() == 3);
  FUZZ_CHECK(f->file_size() == size);
  const bool writable = read_all_keys(*f);
  check_tensors(*f, size);
  // Round trip only what the writer is meant to reproduce: below alignment 4 an f32 tensor may land
  // misaligned for the reader (the reader's rule, not a writer bug); a huge alignment would make
  // the writer pad to gigabytes; the writer refuses empty keys and names, and names of 64 bytes or
  // more (llama.cpp's limit), which the reader allows.
  const auto has_unwritable_name = [&] {
    for (std::string_view k : f->keys()) {
      if (k.empty()) return true;
    }
    for (const GgufTensor& t : f->tensors()) {
      if (t.name.empty() || t.name.size() >= 64) return true;
    }
    return false;
  };
  if (writable && f->alignment() >= 4 && f->alignment() <= 4096 && !has_unwritable_name()) round_trip(*f);
  return 0;
}
