#include "text_output.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>

namespace kvstream {
namespace {

// Set by the signal handler, read by every thread (sweep's workers poll it): a lock-free atomic
// is both async-signal-safe and free of data races, unlike a volatile sig_atomic_t.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_interrupt(int sig) {
  g_interrupted.store(true, std::memory_order_relaxed);
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills at once
}

}  // namespace

bool TextOut::write(std::string_view piece) {
  buf_.clear();
  for (char c : piece) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 ? u != 0x7F : (c == '\n' || c == '\t')) buf_.push_back(c);
  }
  if (!buf_.empty() && std::fwrite(buf_.data(), 1, buf_.size(), stdout) != buf_.size()) return false;
  return std::fflush(stdout) == 0;
}

void install_signal_handlers() {
  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a write interrupted by Ctrl-C completes instead of failing
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool interrupted() { return g_interrupted.load(std::memory_order_relaxed); }

std::string human_bytes(std::size_t bytes) {
  const auto b = static_cast<double>(bytes);
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (std::size_t{1} << 20)) return fmt::format("{:.1f} KiB", b / 1024.0);
  if (bytes < (std::size_t{1} << 30)) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024.0));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024.0 * 1024.0));
}

bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }
bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace kvstream
