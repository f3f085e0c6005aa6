// BpePreTokenizer: splits text into the words a byte-level BPE model merges within, by the
// regular expressions of a named pre-tokenizer (GGUF tokenizer.ggml.pre), as llama.cpp does.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvcache::llama {

/// The pre-tokenizer named `name` applies its expressions in order: each one cuts every piece
/// left by the previous ones into its matches and the text between them (llama.cpp's
/// unicode_regex_split; Hugging Face's Split with "isolated" behaviour). The expressions are
/// llama.cpp's (llama-vocab.cpp) for the same name, matched by PCRE2 in UTF mode with Unicode
/// properties (\p{L}, \p{N}, \p{P}, \s are Unicode-aware). Invalid UTF-8 is accepted: bytes that
/// are not part of a valid character match no property and end up in the pieces between
/// matches, so no byte is ever lost.
///
/// Immutable once built; split() is thread safe. Not copyable (owns compiled patterns).
class BpePreTokenizer {
 public:
  /// The pre-tokenizer for `name`, or null when the name is not supported.
  static std::unique_ptr<BpePreTokenizer> create(std::string_view name);
  /// Every supported name, comma separated (for error messages and docs).
  static std::string supported_names();

  ~BpePreTokenizer();
  BpePreTokenizer(const BpePreTokenizer&) = delete;
  BpePreTokenizer& operator=(const BpePreTokenizer&) = delete;

  /// The words of `text` in order; their concatenation is `text`. Views point into `text`.
  std::vector<std::string_view> split(std::string_view text) const;

  /// Whether a word that is a token is emitted as is, without merging (llama.cpp's
  /// ignore_merges, Hugging Face's BPE ignore_merges: the llama3 family).
  bool ignore_merges() const noexcept { return ignore_merges_; }
  /// Whether BOS is added by default (llama.cpp: the llama3 family), unless the file says.
  bool add_bos() const noexcept { return add_bos_; }

 private:
  struct Regex;
  BpePreTokenizer();

  std::vector<std::unique_ptr<Regex>> regexes_;  ///< applied in order
  bool ignore_merges_ = false;
  bool add_bos_ = false;
};

}  // namespace kvcache::llama
