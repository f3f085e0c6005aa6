#include "chat_template.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <utility>
#include <variant>

#include "kvcache/error.h"

namespace kvserve {
namespace {

using Kind = ChatTemplate::Kind;

constexpr std::array<std::pair<std::string_view, Kind>, 14> kNames = {{
    {"chatml", Kind::chatml},
    {"llama3", Kind::llama3},
    {"llama2", Kind::llama2},
    {"llama2-sys", Kind::llama2_sys},
    {"llama2-sys-bos", Kind::llama2_sys_bos},
    {"llama2-sys-strip", Kind::llama2_sys_strip},
    {"mistral-v1", Kind::mistral_v1},
    {"mistral-v3", Kind::mistral_v3},
    {"mistral-v3-tekken", Kind::mistral_v3_tekken},
    {"mistral-v7", Kind::mistral_v7},
    {"mistral-v7-tekken", Kind::mistral_v7_tekken},
    {"zephyr", Kind::zephyr},
    {"gemma", Kind::gemma},
    {"phi3", Kind::phi3},
}};

std::string name_list() {
  std::string out;
  for (const auto& [name, kind] : kNames) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// llama.cpp's trim: ASCII whitespace at both ends.
std::string trim(std::string_view s) {
  const auto space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
  };
  std::size_t b = 0, e = s.size();
  while (b < e && space(s[b])) ++b;
  while (e > b && space(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

// What llama.cpp's detection reads `jinja` as: one of ours, or the name of a llama.cpp family this
// server does not render (so that family's own markers never get misread as one of ours).
using Detected = std::variant<Kind, std::string_view>;

Detected detect_family(std::string_view t) {
  const auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) return "phi4";
    if (has("<end_of_utterance>")) return "smolvlm";
    return Kind::chatml;
  }
  if (t.starts_with("mistral") || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) return Kind::mistral_v7;
    if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      if (has(" [INST]")) return Kind::mistral_v1;
      if (has("\"[INST]\"")) return Kind::mistral_v3_tekken;
      return Kind::mistral_v3;
    }
    if (has("content.strip()")) return Kind::llama2_sys_strip;
    if (has("bos_token + '[INST]")) return Kind::llama2_sys_bos;
    if (has("<<SYS>>")) return Kind::llama2_sys;
    return Kind::llama2;
  }
  if (has("<|assistant|>") && has("<|end|>")) return Kind::phi3;
  if (has("[gMASK]<sop>")) return "chatglm4";
  if (has("<|assistant|>") && has("<|user|>")) return has("</s>") ? "falcon3" : "glmedge";
  if (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) return "glmedge";
  if (has("<|user|>") && has("<|endoftext|>")) return Kind::zephyr;
  if (has("bos_token + message['role']")) return "monarch";
  if (has("<start_of_turn>")) return Kind::gemma;
  if (has(R"('\n\nAssistant: ' + eos_token)")) return "orion";
  if (has("GPT4 Correct ")) return "openchat";
  if (has("USER: ") && has("ASSISTANT: ")) return has("SYSTEM: ") ? "vicuna-orca" : "vicuna";
  if (has("### Instruction:") && has("<|EOT|>")) return "deepseek";
  if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return "command-r";
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return Kind::llama3;
  return std::string_view{};
}

// The template's size and first line, JSON-escaped and cut, so an error message names it.
std::string describe(std::string_view jinja) {
  std::string_view head = jinja.substr(0, jinja.find('\n'));
  const bool cut = head.size() > 80;
  if (cut) head = head.substr(0, 80);
  const bool whole = !cut && head.size() == jinja.size();
  return std::to_string(jinja.size()) + (whole ? " bytes: " : " bytes, beginning ") +
         nlohmann::json(std::string(head)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
         (whole ? "" : "...");
}

void render_llama2(Kind kind, std::span<const ChatMessage> messages, std::string& out) {
  const bool system_block = kind != Kind::llama2;
  const bool bos_inside = kind == Kind::llama2_sys_bos;
  const bool strip = kind == Kind::llama2_sys_strip;
  bool inside_turn = true;  // the first [INST] opens without BOS: the tokenizer adds it
  out += "[INST] ";
  for (const ChatMessage& m : messages) {
    const std::string content = strip ? trim(m.content) : m.content;
    if (!inside_turn) {
      inside_turn = true;
      out += bos_inside ? "<s>[INST] " : "[INST] ";
    }
    if (m.role == "system") {
      out += system_block ? "<<SYS>>\n" + content + "\n<</SYS>>\n\n" : content + "\n";
    } else if (m.role == "user") {
      out += content + " [/INST]";
    } else {
      out += content + "</s>";
      inside_turn = false;
    }
  }
}

void render_mistral(Kind kind, std::span<const ChatMessage> messages, std::string& out) {
  const std::string lead = kind == Kind::mistral_v1 ? " " : "";
  const std::string trail = kind == Kind::mistral_v3_tekken ? "" : " ";
  const bool trim_answers = kind == Kind::mistral_v3;
  bool inside_turn = false;
  for (const ChatMessage& m : messages) {
    if (!inside_turn) {
      out += lead + "[INST]" + trail;
      inside_turn = true;
    }
    if (m.role == "system") {
      out += m.content + "\n\n";
    } else if (m.role == "user") {
      out += m.content + lead + "[/INST]";
    } else {
      out += trail + (trim_answers ? trim(m.content) : m.content) + "</s>";
      inside_turn = false;
    }
  }
}

void render_mistral_v7(Kind kind, std::span<const ChatMessage> messages, std::string& out) {
  const std::string space = kind == Kind::mistral_v7 ? " " : "";
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      out += "[SYSTEM_PROMPT]" + space + m.content + "[/SYSTEM_PROMPT]";
    } else if (m.role == "user") {
      out += "[INST]" + space + m.content + "[/INST]";
    } else {
      out += space + m.content + "</s>";
    }
  }
}

void render_gemma(std::span<const ChatMessage> messages, std::string& out) {
  // Gemma has no system role: the system text opens the next user turn.
  std::string system;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system += trim(m.content);
      continue;
    }
    const std::string role = m.role == "assistant" ? "model" : m.role;
    out += "<start_of_turn>" + role + "\n";
    if (!system.empty() && role != "model") {
      out += system + "\n\n";
      system.clear();
    }
    out += trim(m.content) + "<end_of_turn>\n";
  }
  out += "<start_of_turn>model\n";
}

}  // namespace

ChatTemplate ChatTemplate::named(std::string_view name) {
  for (const auto& [n, kind] : kNames) {
    if (n == name) return ChatTemplate(kind);
  }
  throw kvcache::InvalidArgument("unknown chat template '" + std::string(name) +
                                 "': the built-in templates are " + name_list());
}

ChatTemplate ChatTemplate::detect(std::string_view jinja) {
  for (const auto& [n, kind] : kNames) {
    if (n == jinja) return ChatTemplate(kind);  // llama.cpp accepts a name in place of a template
  }
  const Detected d = detect_family(jinja);
  if (const Kind* kind = std::get_if<Kind>(&d)) return ChatTemplate(*kind);
  const std::string_view family = std::get<std::string_view>(d);
  const std::string which = "chat template (" + describe(jinja) + ")";
  if (!family.empty()) {
    throw kvcache::FormatError(
        "the " + which + " is llama.cpp's '" + std::string(family) +
        "' template, which this server does not render; built-in templates: " + name_list());
  }
  throw kvcache::FormatError("the " + which + " is not one of the built-in templates (" + name_list() + ")");
}

ChatTemplate ChatTemplate::choose(std::optional<std::string_view> name,
                                  std::optional<std::string_view> model_template, std::string& source) {
  if (name) {
    source = "--chat-template";
    return named(*name);
  }
  if (!model_template) {
    source = "default: the model has no chat template";
    return ChatTemplate(Kind::chatml);
  }
  source = "the model's tokenizer.chat_template";
  try {
    return detect(*model_template);
  } catch (const kvcache::FormatError& e) {
    throw kvcache::FormatError(std::string("tokenizer.chat_template: ") + e.what() +
                               "; --chat-template NAME renders the model's conversations with one of them");
  }
}

std::vector<std::string_view> ChatTemplate::names() {
  std::vector<std::string_view> out;
  for (const auto& [n, kind] : kNames) out.push_back(n);
  return out;
}

std::string_view ChatTemplate::name() const noexcept {
  for (const auto& [n, kind] : kNames) {
    if (kind == kind_) return n;
  }
  return "?";
}

std::string_view ChatTemplate::end_of_turn() const noexcept {
  switch (kind_) {
    case Kind::chatml:
      return "<|im_end|>";
    case Kind::llama3:
      return "<|eot_id|>";
    case Kind::zephyr:
      return "<|endoftext|>";
    case Kind::gemma:
      return "<end_of_turn>";
    case Kind::phi3:
      return "<|end|>";
    default:
      return "</s>";  // the Llama 2 and Mistral families end a turn with EOS
  }
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages) const {
  std::string out;
  switch (kind_) {
    case Kind::chatml:
      for (const ChatMessage& m : messages)
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case Kind::llama3:
      for (const ChatMessage& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case Kind::llama2:
    case Kind::llama2_sys:
    case Kind::llama2_sys_bos:
    case Kind::llama2_sys_strip:
      render_llama2(kind_, messages, out);
      break;
    case Kind::mistral_v1:
    case Kind::mistral_v3:
    case Kind::mistral_v3_tekken:
      render_mistral(kind_, messages, out);
      break;
    case Kind::mistral_v7:
    case Kind::mistral_v7_tekken:
      render_mistral_v7(kind_, messages, out);
      break;
    case Kind::zephyr:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|endoftext|>\n";
      out += "<|assistant|>\n";
      break;
    case Kind::gemma:
      render_gemma(messages, out);
      break;
    case Kind::phi3:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      out += "<|assistant|>\n";
      break;
  }
  return out;
}

ChatStops chat_stops(const ChatTemplate& tmpl, const kvcache::llama::TextTokenizer& tokenizer) {
  using kvcache::llama::TokenKind;
  ChatStops stops;
  const std::string_view marker = tmpl.end_of_turn();
  const std::vector<std::int32_t> ids = tokenizer.encode(marker, false, false, true);
  if (ids.size() == 1 &&
      (tokenizer.kind(ids[0]) == TokenKind::control || tokenizer.kind(ids[0]) == TokenKind::user_defined)) {
    stops.tokens.push_back(ids[0]);
  } else {
    stops.texts.emplace_back(marker);
  }
  for (const std::int32_t t : {tokenizer.eos(), tokenizer.bos()}) {
    if (t >= 0 && std::find(stops.tokens.begin(), stops.tokens.end(), t) == stops.tokens.end())
      stops.tokens.push_back(t);
  }
  return stops;
}

}  // namespace kvserve
