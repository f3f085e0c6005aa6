// Running the small matplotlib scripts in scripts/ that draw kvstream's figures. Plots are
// optional: the data files are written first, and a machine without python3 or matplotlib gets
// a warning instead of a failure.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kvstream {

/// The script to run: `flag` (--plot-script) when given, else <repo>/scripts/<default_name> in
/// the source tree kvstream was built from. Throws kvcache::Error when `flag` names a missing file.
/// An empty path means the default script is not there (an installed or moved binary).
std::filesystem::path plot_script_path(const std::string& flag, std::string_view default_name);

enum class PlotStatus {
  drawn,          ///< the script exited 0
  no_python,      ///< no interpreter could be started
  no_matplotlib,  ///< every interpreter tried lacks matplotlib (the scripts exit 3 then)
  failed,         ///< the script failed otherwise (its messages went to stderr)
};

struct PlotResult {
  PlotStatus status = PlotStatus::failed;
  std::string detail;  ///< interpreter used or tried, exit status: for the warning or error line
};

/// Runs `python script args...` with the script's stdout sent to stderr (stdout is kvstream's
/// report). `python` empty tries "python3" from PATH, then /usr/bin/python3: Debian installs
/// python3-matplotlib for the system interpreter, and a pyenv or venv python3 earlier on PATH
/// often lacks it.
PlotResult run_plot_script(const std::string& python, const std::filesystem::path& script,
                           const std::vector<std::string>& args);

/// Runs the plot when possible. Prints a warning on stderr and returns false when python3,
/// matplotlib or the default script is missing, since the plot is optional; returns true when
/// drawn; throws kvcache::Error when the script itself failed (a bug worth a non-zero exit).
/// `what` names the figure ("sweep.png").
bool draw_plot(const std::string& python, const std::string& script_flag, std::string_view default_script,
               const std::vector<std::string>& args, std::string_view what);

}  // namespace kvstream
