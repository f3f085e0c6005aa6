// The text a completion releases to its client as tokens arrive: stop strings end it (the stop
// string itself is not returned, as OpenAI does), text that may still turn into a stop string is
// held back, and a UTF-8 character split across tokens is never released half-way.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kvserve {

class TextStops {
 public:
  explicit TextStops(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  /// Appends a token's text. Returns true when a stop string is now complete (the text is then cut
  /// before it and nothing more may be appended).
  bool append(std::string_view piece);
  /// Text that can be released now, removed from the buffer: all of it up to what could still be
  /// the start of a stop string or of an incomplete UTF-8 character.
  std::string take_ready();
  /// Everything not yet released (call when the completion ends; a trailing incomplete UTF-8
  /// character is included and left to the JSON encoder to replace).
  std::string take_rest();
  bool stopped() const noexcept { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string text_;      ///< appended and not yet released
  bool stopped_ = false;  ///< a stop string was found
};

/// Length of the longest prefix of `s` that ends on a UTF-8 character boundary (an incomplete
/// trailing sequence of a multi-byte character is excluded; invalid bytes count as characters).
std::size_t utf8_complete_prefix(std::string_view s) noexcept;

}  // namespace kvserve
