// Stop strings and UTF-8-safe release of streamed text, against a naive whole-string oracle.
#include "text_stops.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace kvserve::test {

TEST_CASE("text stops: a stop string split across pieces ends the text before it") {
  TextStops t({"END"});
  std::string out;
  CHECK(!t.append("abc E"));
  out += t.take_ready();
  CHECK(out == "abc ");  // "E" may begin the stop string: held back
  CHECK(!t.append("N"));
  out += t.take_ready();
  CHECK(t.append("Dxyz"));
  out += t.take_ready() + t.take_rest();
  CHECK(out == "abc ");
  CHECK(t.stopped());
}

TEST_CASE("text stops: held-back text that turns out not to be a stop is released") {
  TextStops t({"\n\n"});
  t.append("a\n");
  CHECK(t.take_ready() == "a");
  t.append("b");
  CHECK(t.take_ready() == "\nb");
}

TEST_CASE("text stops: a UTF-8 character split over tokens is released whole") {
  TextStops t({});
  t.append("x\xE2\x82");  // first two bytes of the euro sign
  CHECK(t.take_ready() == "x");
  t.append("\xAC!");
  CHECK(t.take_ready() == "\xE2\x82\xAC!");
  CHECK(utf8_complete_prefix("ab\xF0\x9F\x98") == 2);
  CHECK(utf8_complete_prefix("ab\xF0\x9F\x98\x80") == 6);
  CHECK(utf8_complete_prefix("\x80\x80") == 2);  // stray continuation bytes are not held forever
}

TEST_CASE("text stops: random pieces give the same result as cutting the whole text") {
  std::mt19937 rng(11);
  const std::string alphabet = "ab.\n";
  for (int trial = 0; trial < 500; ++trial) {
    std::string whole;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) whole += alphabet[rng() % alphabet.size()];
    const std::vector<std::string> stops = {"a.b", "\n\n"};
    std::size_t cut = std::string::npos;
    for (const auto& s : stops) cut = std::min(cut, whole.find(s));
    const std::string want = whole.substr(0, cut);

    TextStops t(stops);
    std::string got;
    std::size_t at = 0;
    bool stopped = false;
    while (at < whole.size() && !stopped) {
      const std::size_t n = 1 + rng() % 4;
      stopped = t.append(whole.substr(at, n));
      at += n;
      got += t.take_ready();
    }
    got += t.take_rest();
    REQUIRE(got == want);
    CHECK(stopped == (cut != std::string::npos));
  }
}

}  // namespace kvserve::test
