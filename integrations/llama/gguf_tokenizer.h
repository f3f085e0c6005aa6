// load_gguf_tokenizer: the tokenizer stored in a GGUF file's tokenizer.ggml.* metadata.
#pragma once

#include <memory>

#include "llama/gguf_file.h"
#include "llama/text_tokenizer.h"

namespace kvcache::llama {

/// Reads tokenizer.ggml.model, .pre, .tokens, .scores, .token_type, .merges, .bos_token_id,
/// .eos_token_id, .add_bos_token and .add_space_prefix from `file` and builds the tokenizer
/// (make_gguf_tokenizer in gguf_vocab.h says which models and pre-tokenizers work and the
/// defaults). The result owns copies of everything it needs: it does not keep `file` alive.
/// unique_ptr because the caller decides how to share it (wrap it in a shared_ptr to hand it to
/// several streams; it is thread safe to use from many threads).
///
/// Throws kvcache::FormatError naming the file and the key: a missing tokenizer.ggml.model or
/// .tokens, a key stored with the wrong type, and every error make_gguf_tokenizer lists.
std::unique_ptr<TextTokenizer> load_gguf_tokenizer(const GgufFile& file);

}  // namespace kvcache::llama
