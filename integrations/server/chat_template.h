// Chat templates: how a conversation becomes the one prompt a model was trained on. Recognised
// from a GGUF file's tokenizer.chat_template (a Jinja template) by small named checks, as
// llama.cpp's llm_chat_detect_template does for its built-in list, and rendered by one
// hand-written renderer per family, as llm_chat_apply_template does (no Jinja engine: the
// families below are the templates nearly every chat model ships). An unrecognised template is
// an error naming it, never a silent default.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llama/text_tokenizer.h"

namespace kvserve {

/// One message of a conversation. `role` is "system", "user" or "assistant".
struct ChatMessage {
  std::string role;
  std::string content;
};

/// Value type; thread safe (immutable).
class ChatTemplate {
 public:
  /// The families and their variants, by llama.cpp's names (which --chat-template takes).
  enum class Kind {
    chatml,             ///< <|im_start|>role\n...<|im_end|>\n (Qwen, SmolLM, Yi, Hermes, ...)
    llama3,             ///< <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
    llama2,             ///< [INST] ... [/INST]...</s>, a system message as plain text
    llama2_sys,         ///< with <<SYS>> blocks
    llama2_sys_bos,     ///< and <s> before every later [INST]
    llama2_sys_strip,   ///< and every message trimmed
    mistral_v1,         ///< " [INST] ... [/INST] ...</s>"
    mistral_v3,         ///< "[INST] ...[/INST] ...</s>", assistant messages trimmed
    mistral_v3_tekken,  ///< "[INST]...[/INST]...</s>"
    mistral_v7,         ///< [SYSTEM_PROMPT] ...[/SYSTEM_PROMPT][INST] ...[/INST] ...</s>
    mistral_v7_tekken,  ///< the same without the spaces
    zephyr,             ///< <|role|>\n...<|endoftext|>\n (StableLM 2 Zephyr)
    gemma,  ///< <start_of_turn>user|model\n...<end_of_turn>\n, system merged into the first user turn
    phi3,   ///< <|role|>\n...<|end|>\n
  };

  /// The template named `name` (one of names()). Throws kvcache::InvalidArgument listing them.
  static ChatTemplate named(std::string_view name);
  /// The template a tokenizer.chat_template Jinja source is, by llama.cpp's checks in llama.cpp's
  /// order (so a template that contains markers of two families is read as llama.cpp reads it).
  /// Throws kvcache::FormatError naming the template (its size and first line) when it is none
  /// of the built-in ones, or naming the llama.cpp family it looks like when that family is one
  /// this server does not render (vicuna, deepseek, command-r, ...).
  static ChatTemplate detect(std::string_view jinja);
  /// The template a server runs with: `name` (--chat-template) when given, else the model's own
  /// template detected, else chatml, which llama.cpp's server also falls back to for a model
  /// without one. `source` receives how it was chosen ("--chat-template", "the model's
  /// tokenizer.chat_template", "default: the model has no chat template"). Throws what named()
  /// and detect() throw, the latter's message saying that --chat-template NAME overrides it.
  static ChatTemplate choose(std::optional<std::string_view> name,
                             std::optional<std::string_view> model_template, std::string& source);
  /// Every name named() accepts.
  static std::vector<std::string_view> names();

  explicit ChatTemplate(Kind kind) : kind_(kind) {}
  Kind kind() const noexcept { return kind_; }
  std::string_view name() const noexcept;

  /// The prompt for `messages`, opening the assistant's turn at the end (OpenAI's semantics: the
  /// answer is the next assistant message). The text holds the template's markers as text; encode
  /// it with parse_special so that they become the vocabulary's special tokens. BOS is not part of
  /// it (the tokenizer adds it, as llama.cpp's server does). Rendering a conversation and then the
  /// same conversation with an assistant answer and a new user message appended gives a text that
  /// starts with the first one followed by the answer (what lets a session continue a chat).
  std::string render(std::span<const ChatMessage> messages) const;

  /// What this template writes right after an assistant message: the text a model trained on it
  /// produces to end its turn ("<|im_end|>", "</s>", "<|eot_id|>", ...).
  std::string_view end_of_turn() const noexcept;

  friend bool operator==(const ChatTemplate&, const ChatTemplate&) = default;

 private:
  Kind kind_;
};

/// What ends a chat answer.
struct ChatStops {
  std::vector<std::int32_t> tokens;  ///< sampling one ends the answer (it is not part of the text)
  std::vector<std::string> texts;    ///< stop strings, as llama.cpp adds its templates' markers
};

/// The stops of `tmpl` with `tokenizer`: its end-of-turn marker when the vocabulary encodes it as
/// one control or user-defined token, else the marker as a stop string (a vocabulary without the
/// template's special tokens, stories260K's under chatml); then EOS and BOS, which end a text
/// (a llama2.c model starts its next story with BOS).
ChatStops chat_stops(const ChatTemplate& tmpl, const kvcache::llama::TextTokenizer& tokenizer);

}  // namespace kvserve
