// Substring test for the error-message checks of the runtime tests.
#pragma once

#include <string_view>

namespace kvcache::llama::test {

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

}  // namespace kvcache::llama::test
