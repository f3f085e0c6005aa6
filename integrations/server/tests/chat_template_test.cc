// Chat templates: each family detected from a real model's Jinja template and rendered exactly as
// llama.cpp renders it (the conversation and expected strings are llama.cpp's
// tests/test-chat-template.cpp vectors), variants by name, clear errors for the rest, and the
// rendering tokenized by real vocabularies.
#include "chat_template.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "kvcache/error.h"
#include "llama/gguf_file.h"
#include "llama/gguf_tokenizer.h"
#include "llama/gguf_vocab.h"

namespace kvserve::test {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

struct Known {
  const char* model;     // where the template comes from
  const char* jinja;     // its tokenizer.chat_template
  const char* name;      // what it is detected as
  const char* rendered;  // kConversation rendered, as llama.cpp renders it
};

const Known
    kKnown[] =
        {
            {"teknium/OpenHermes-2.5-Mistral-7B (ChatML, as Qwen)",
             R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})",
             "chatml",
             "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
             "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
             "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother "
             "question<|im_end|>\n"
             "<|im_start|>assistant\n"},
            {"Llama 3",
             R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }})",
             "llama3",
             "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_"
             "header_id|>\n\n"
             "Hi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n"},
            {"mistralai/Mistral-7B-Instruct-v0.2 (Llama 2 format, no system role)",
             R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})",
             "llama2",
             "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am "
             "an assistant   "
             "</s>[INST] Another question [/INST]"},
            {"TheBloke/FusionNet_34Bx2_MoE-AWQ (Llama 2 with <<SYS>> and BOS inside)",
             R"({%- for idx in range(0, messages|length) -%}
{%- if messages[idx]['role'] == 'user' -%}
{%- if idx > 1 -%}
{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}
{%- else -%}
{{- messages[idx]['content'] + ' [/INST]' -}}
{%- endif -%}
{% elif messages[idx]['role'] == 'system' %}
{{- '[INST] <<SYS>>\n' + messages[idx]['content'] + '\n<</SYS>>\n\n' -}}
{%- elif messages[idx]['role'] == 'assistant' -%}
{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}
{% endif %}
{% endfor %})",
             "llama2-sys-bos",
             "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] "
             "Who are you "
             "[/INST]   I am an assistant   </s><s>[INST] Another question [/INST]"},
            {"bofenghuang/vigogne-2-70b-chat (Llama 2 with <<SYS>>, messages stripped)",
             R"({{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})",
             "llama2-sys-strip",
             "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who "
             "are you "
             "[/INST]I am an assistant</s>[INST] Another question [/INST]"},
            {"mistralai/Mistral-7B-Instruct-v0.2 (Mistral's 'v1' template)",
             R"({%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- endif %}
{%- endfor %})",
             "mistral-v1",
             " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]   "
             " I am an "
             "assistant   </s> [INST] Another question [/INST]"},
            {"Mistral-Large-Instruct-2407 (Mistral's 'v3' template, abridged to its markers)",
             R"({{- bos_token }}{%- for message in loop_messages %}{%- if message["role"] == "user" %}{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS] [" }}{%- endif %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- elif message["role"] == "assistant" %}{{- " " + message["content"]|trim + eos_token}}{%- endif %}{%- endfor %})",
             "mistral-v3",
             "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] I am "
             "an "
             "assistant</s>[INST] Another question[/INST]"},
            {"Mistral-Nemo-Instruct-2407 (Mistral's 'v3-tekken' template, abridged to its markers)",
             R"({{- bos_token }}{%- for message in loop_messages %}{%- if message["role"] == "user" %}{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS][" }}{%- endif %}{{- "[INST]" + message["content"] + "[/INST]" }}{%- elif message["role"] == "assistant" %}{{- message["content"] + eos_token}}{%- endif %}{%- endfor %})",
             "mistral-v3-tekken",
             "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are you[/INST]   I am "
             "an assistant   "
             "</s>[INST]Another question[/INST]"},
            {"mistralai/Mistral-Large-Instruct-2411 (Mistral's 'v7' template)",
             R"({{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %})",
             "mistral-v7",
             "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi "
             "there</s>[INST] Who are "
             "you[/INST]    I am an assistant   </s>[INST] Another question[/INST]"},
            // llama.cpp reads a template as Zephyr when it spells <|user|> and <|endoftext|> but not
            // <|assistant|> (with both role markers it reads glmedge or falcon3, as it does
            // zephyr-7b-beta's).
            {"Zephyr format (StableLM 2 Zephyr's markers)",
             R"({% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>
' }}{% else %}{{ '<|' + message['role'] + '|>
' }}{% endif %}{{ message['content'] + '<|endoftext|>' + '
' }}{% endfor %}{% if add_generation_prompt %}{{ '<|' + 'assistant' + '|>
' }}{% endif %})",
             "zephyr",
             "<|system|>\nYou are a helpful "
             "assistant<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\nHi "
             "there<|endoftext|>\n<|user|>\nWho are you<|endoftext|>\n<|assistant|>\n   I am an assistant   "
             "<|endoftext|>\n<|user|>\nAnother question<|endoftext|>\n<|assistant|>\n"},
            {"google/gemma-7b-it (Gemma)",
             R"({% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %})",
             "gemma",
             "<start_of_turn>user\nYou are a helpful "
             "assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi "
             "there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am "
             "an "
             "assistant<end_of_turn>\n<start_of_turn>user\nAnother "
             "question<end_of_turn>\n<start_of_turn>model\n"},
            {"microsoft/Phi-3-mini-4k-instruct (Phi-3)",
             R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '
' + message['content'] + '<|end|>' + '
' + '<|assistant|>' + '
'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '
'}}{% endif %}{% endfor %})",
             "phi3",
             "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
             "there<|end|>\n"
             "<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother "
             "question<|end|>\n<|assistant|>\n"},
};

std::string detect_error(const std::string& jinja) {
  try {
    ChatTemplate::detect(jinja);
  } catch (const kvcache::FormatError& e) {
    return e.what();
  }
  FAIL("accepted: " << jinja);
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("chat template: each family is detected from its model's template and renders as llama.cpp does") {
  for (const Known& k : kKnown) {
    const std::string model = k.model;
    CAPTURE(model);
    const ChatTemplate t = ChatTemplate::detect(k.jinja);
    CHECK(t.name() == k.name);
    CHECK(t == ChatTemplate::named(k.name));
    CHECK(t.render(kConversation) == k.rendered);
  }
}

TEST_CASE("chat template: the variants without a detected model render by name") {
  CHECK(
      ChatTemplate::named("llama2-sys").render(kConversation) ==
      "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you "
      "[/INST]   I am an assistant   </s>[INST] Another question [/INST]");
  CHECK(
      ChatTemplate::named("mistral-v7-tekken").render(kConversation) ==
      "[SYSTEM_PROMPT]You are a helpful assistant[/SYSTEM_PROMPT][INST]Hello[/INST]Hi there</s>[INST]Who are "
      "you[/INST]   I am an assistant   </s>[INST]Another question[/INST]");
  // llama.cpp's own check for the Llama 2 chat template with a system block and no variant markers.
  CHECK(ChatTemplate::detect("{% if system %}<<SYS>>{% endif %}[INST] {{ content }} [/INST]").name() ==
        "llama2-sys");
  CHECK(ChatTemplate::detect("chatml").name() ==
        "chatml");  // a name stands for its template, as in llama.cpp
}

TEST_CASE("chat template: a continued conversation renders as the first one followed by the answer") {
  // What lets a session continue a stateless chat: the prompt of turn 2 is the prompt of turn 1,
  // then the answer (after one space in the Mistral formats) and the end-of-turn marker.
  const std::vector<ChatMessage> turn1 = {{"system", "Be brief."}, {"user", "Hello"}};
  std::vector<ChatMessage> turn2 = turn1;
  turn2.push_back({"assistant", "Hi there"});
  turn2.push_back({"user", "Again"});
  for (const std::string_view name : ChatTemplate::names()) {
    CAPTURE(name);
    const ChatTemplate t = ChatTemplate::named(name);
    const std::string first = t.render(turn1), second = t.render(turn2);
    REQUIRE(second.substr(0, first.size()) == first);
    const std::string answer = "Hi there" + std::string(t.end_of_turn());
    const std::string rest = second.substr(first.size());
    CHECK((rest.starts_with(answer) || rest.starts_with(" " + answer)));
  }
}

TEST_CASE("chat template: unknown names and templates are errors that name them") {
  try {
    ChatTemplate::named("alpaca");
    FAIL("accepted");
  } catch (const kvcache::InvalidArgument& e) {
    CHECK(contains(e.what(), "'alpaca'"));
    CHECK(contains(e.what(), "chatml, llama3, llama2"));
  }
  const std::string unknown = detect_error("INVALID TEMPLATE\n{{ messages }}");
  CHECK(contains(unknown, "\"INVALID TEMPLATE\"..."));
  CHECK(contains(unknown, "31 bytes"));
  CHECK(contains(unknown, "not one of the built-in templates"));
  // A family llama.cpp knows and this server does not render is named, and never misread: Phi-4
  // uses ChatML's markers, Vicuna none of ours.
  CHECK(contains(detect_error("{{'<|im_start|>' + message['role'] + '<|im_sep|>'}}"),
                 "llama.cpp's 'phi4' template"));
  CHECK(
      contains(detect_error("{{ 'USER: ' + content + '\\nASSISTANT: ' }}"), "llama.cpp's 'vicuna' template"));
  CHECK(contains(detect_error("{{ '<|user|>' }}{{ '<|assistant|>' }}"), "llama.cpp's 'glmedge' template"));

  std::string source;
  CHECK(ChatTemplate::choose(std::nullopt, std::nullopt, source).name() == "chatml");
  CHECK(source == "default: the model has no chat template");
  CHECK(ChatTemplate::choose("gemma", kKnown[0].jinja, source).name() == "gemma");
  CHECK(source == "--chat-template");
  CHECK(ChatTemplate::choose(std::nullopt, kKnown[1].jinja, source).name() == "llama3");
  try {
    ChatTemplate::choose(std::nullopt, "INVALID", source);
    FAIL("accepted");
  } catch (const kvcache::FormatError& e) {
    CHECK(contains(e.what(), "tokenizer.chat_template"));
    CHECK(contains(e.what(), "--chat-template NAME"));
  }
}

TEST_CASE("chat template: Llama 2's markers against the real Llama 2 vocabulary") {
  const auto file = kvcache::llama::GgufFile::open(std::filesystem::path(KVCACHE_SHARED_DIR) / "data" /
                                                   "tokenizers" / "ggml-vocab-llama-spm.gguf");
  const auto tok = kvcache::llama::load_gguf_tokenizer(*file);
  const std::vector<ChatMessage> chat = {{"user", "Hello"}, {"assistant", "Hi there"}, {"user", "Again"}};
  const ChatTemplate t = ChatTemplate::named("llama2-sys-bos");
  const std::string text = t.render(chat);
  CHECK(text == "[INST] Hello [/INST]Hi there</s><s>[INST] Again [/INST]");
  // Parsed as special tokens, </s> and <s> are EOS and BOS; as text they would be characters.
  const std::vector<std::int32_t> ids = tok->encode(text, true, false, true);
  REQUIRE(ids.size() > 4);
  CHECK(ids.front() == tok->bos());
  CHECK(std::count(ids.begin(), ids.end(), tok->eos()) == 1);
  CHECK(std::count(ids.begin(), ids.end(), tok->bos()) == 2);
  const std::vector<std::int32_t> as_text = tok->encode(text, true, false, false);
  CHECK(std::count(as_text.begin(), as_text.end(), tok->eos()) == 0);
  // The turn ends with EOS: it is the stop token, and no text stop string is needed.
  const ChatStops stops = chat_stops(t, *tok);
  CHECK(stops.tokens == std::vector<std::int32_t>{tok->eos(), tok->bos()});
  CHECK(stops.texts.empty());
}

TEST_CASE("chat template: ChatML's markers become single tokens where the vocabulary has them") {
  // A SentencePiece vocabulary with Qwen's markers as control tokens; bytes fall back.
  kvcache::llama::GgufVocab v;
  v.file = "chatml-vocab";
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    v.tokens.emplace_back(hex);
  }
  v.tokens.insert(v.tokens.end(), {"<|im_start|>", "<|im_end|>", "\xe2\x96\x81Hello", "user", "assistant"});
  v.token_types.assign(v.tokens.size(), 1);
  v.token_types[0] = 2;
  v.token_types[1] = v.token_types[2] = 3;
  for (int b = 0; b < 256; ++b) v.token_types[3 + static_cast<std::size_t>(b)] = 6;
  const std::int32_t im_start = 259, im_end = 260;
  v.token_types[im_start] = v.token_types[im_end] = 3;
  v.scores.assign(v.tokens.size(), 0.f);
  const auto tok = kvcache::llama::make_gguf_tokenizer(v);

  const ChatTemplate t = ChatTemplate::named("chatml");
  const std::vector<std::int32_t> ids = tok->encode(t.render({{{"user", "Hello"}}}), true, false, true);
  CHECK(std::count(ids.begin(), ids.end(), im_start) == 2);
  CHECK(std::count(ids.begin(), ids.end(), im_end) == 1);
  const ChatStops stops = chat_stops(t, *tok);
  CHECK(stops.tokens == std::vector<std::int32_t>{im_end, 2, 1});
  CHECK(stops.texts.empty());
  // Without the markers in the vocabulary (stories260K's), the marker is a stop string.
  kvcache::llama::GgufVocab plain = v;
  plain.tokens[im_start] = "<im_start>";
  plain.tokens[im_end] = "<im_end>";
  const ChatStops text_stops = chat_stops(t, *kvcache::llama::make_gguf_tokenizer(plain));
  CHECK(text_stops.tokens == std::vector<std::int32_t>{2, 1});
  CHECK(text_stops.texts == std::vector<std::string>{"<|im_end|>"});
}

}  // namespace kvserve::test
