// Terminal plumbing for kvstream: streaming text to stdout, Ctrl-C, human-readable sizes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvstream {

/// Writes generated text to stdout, flushing after every piece so it appears as produced.
/// Control bytes other than newline and tab are dropped (a model must not drive the terminal);
/// other bytes pass through unchanged, so multi-byte UTF-8 split over byte tokens reassembles.
class TextOut {
 public:
  /// Returns false once stdout is closed (EPIPE, e.g. `kvstream generate | head`): the caller
  /// should stop quietly. SIGPIPE must be ignored (install_signal_handlers does).
  bool write(std::string_view piece);

 private:
  std::string buf_;  ///< reused sanitising buffer
};

/// Ignores SIGPIPE and makes SIGINT/SIGTERM set a flag instead of killing the process; a second
/// signal restores the default action, so a stuck process can still be killed with Ctrl-C twice.
void install_signal_handlers();
/// Whether SIGINT or SIGTERM arrived since install_signal_handlers().
bool interrupted();

/// "12.5 KiB", "3.0 MiB", "512 B".
std::string human_bytes(std::size_t bytes);

bool stderr_is_tty();
bool stdout_is_tty();

}  // namespace kvstream
