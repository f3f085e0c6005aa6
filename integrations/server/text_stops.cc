#include "text_stops.h"

#include <algorithm>

namespace kvserve {

std::size_t utf8_complete_prefix(std::string_view s) noexcept {
  // Look back at most 3 bytes for the lead byte of a sequence that runs past the end.
  const std::size_t n = s.size();
  for (std::size_t back = 1; back <= std::min<std::size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const std::size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return len > back ? n - back : n;
  }
  return n;
}

bool TextStops::append(std::string_view piece) {
  if (stopped_) return true;
  const std::size_t old = text_.size();
  text_ += piece;
  // Only a stop string that overlaps the new piece can be new.
  std::size_t cut = std::string::npos;
  for (const std::string& s : stops_) {
    const std::size_t from = old >= s.size() ? old - s.size() + 1 : 0;
    const std::size_t at = text_.find(s, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    text_.resize(cut);
    stopped_ = true;
  }
  return stopped_;
}

std::string TextStops::take_ready() {
  std::size_t ready = text_.size();
  if (!stopped_) {
    // Hold back the longest suffix that is a proper prefix of some stop string.
    for (const std::string& s : stops_) {
      for (std::size_t k = std::min(s.size() - 1, text_.size()); k > 0; --k) {
        if (std::string_view(text_).substr(text_.size() - k) == std::string_view(s).substr(0, k)) {
          ready = std::min(ready, text_.size() - k);
          break;
        }
      }
    }
  }
  ready = utf8_complete_prefix(std::string_view(text_).substr(0, ready));
  std::string out = text_.substr(0, ready);
  text_.erase(0, ready);
  return out;
}

std::string TextStops::take_rest() {
  std::string out = std::move(text_);
  text_.clear();
  return out;
}

}  // namespace kvserve
