#include "llama/bpe_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>

#include "kvcache/error.h"

namespace kvcache::llama {
namespace {

// The expression lists of llama.cpp's llm_tokenizer_bpe (llama-vocab.cpp), by pre-tokenizer.
// GPT-2's word split: contractions, letters, digits, other symbols, each with one optional leading
// space, and runs of whitespace (a run before a word leaves its last space to that word).
constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// Llama 3 (tiktoken's cl100k form): case-insensitive contractions, a letter run with at most one
// leading non-letter, up to three digits, symbols with their trailing newlines, newline runs.
constexpr std::string_view kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: as Llama 3 with single digits.
constexpr std::string_view kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Recipe {
  std::vector<std::string_view> names;  // tokenizer.ggml.pre values
  std::vector<std::string_view> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
};

const std::array<Recipe, 8>& recipes() {
  static const std::array<Recipe, 8> r = {{
      {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3"}, {kLlama3}, true, true},
      {{"dbrx", "smaug-bpe"}, {kLlama3}},
      {{"qwen2", "stablelm2", "megrez"}, {kQwen2}},
      {{"gpt-2", "phi-2", "roberta-bpe", "mpt", "olmo", "jais"}, {kGpt2}},
      {{"starcoder", "smollm", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {R"(\p{N})", kGpt2}},
      {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}},
      // CJK ideographs, U+0800..U+4E00, Hangul: written as UTF-8 in the pattern.
      {{"deepseek-coder"},
       {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
        R"(\p{N})"}},
  }};
  return r;
}

}  // namespace

struct BpePreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

BpePreTokenizer::BpePreTokenizer() = default;
BpePreTokenizer::~BpePreTokenizer() = default;

std::unique_ptr<BpePreTokenizer> BpePreTokenizer::create(std::string_view name) {
  for (const Recipe& r : recipes()) {
    bool named = false;
    for (std::string_view n : r.names) named = named || n == name;
    if (!named) continue;
    std::unique_ptr<BpePreTokenizer> p(new BpePreTokenizer());
    p->ignore_merges_ = r.ignore_merges;
    p->add_bos_ = r.add_bos;
    for (std::string_view pattern : r.regexes) {
      int error = 0;
      PCRE2_SIZE error_offset = 0;
      auto re = std::make_unique<Regex>();
      re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &error,
                               &error_offset, nullptr);
      if (re->code == nullptr) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof message);
        throw Error("pre-tokenizer '" + std::string(name) + "': PCRE2 rejects its expression at offset " +
                    std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
      }
      // JIT is an optional speed-up (absent on some platforms); the interpreter gives the same matches.
      pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
      p->regexes_.push_back(std::move(re));
    }
    return p;
  }
  return nullptr;
}

std::string BpePreTokenizer::supported_names() {
  std::string s;
  for (const Recipe& r : recipes()) {
    for (std::string_view n : r.names) {
      if (!s.empty()) s += ", ";
      s += n;
    }
  }
  return s;
}

std::vector<std::string_view> BpePreTokenizer::split(std::string_view text) const {
  std::vector<std::string_view> words, next;
  if (text.empty()) return words;
  words.push_back(text);
  for (const auto& re : regexes_) {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(re->code, nullptr), &pcre2_match_data_free);
    if (!md) throw Error("pre-tokenizer: out of memory for PCRE2 match data");
    next.clear();
    for (const std::string_view w : words) {
      std::size_t last = 0;  // end of the previous match
      while (last < w.size()) {
        const int rc = pcre2_match(re->code, reinterpret_cast<PCRE2_SPTR>(w.data()), w.size(), last,
                                   PCRE2_NOTEMPTY, md.get(), nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR message[256];
          pcre2_get_error_message(rc, message, sizeof message);
          throw Error(std::string("pre-tokenizer: PCRE2 match failed: ") +
                      reinterpret_cast<const char*>(message));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        if (ov[0] > last) next.push_back(w.substr(last, ov[0] - last));
        next.push_back(w.substr(ov[0], ov[1] - ov[0]));
        last = ov[1];
      }
      if (last < w.size()) next.push_back(w.substr(last));
    }
    words.swap(next);
  }
  return words;
}

}  // namespace kvcache::llama
