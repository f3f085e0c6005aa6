#include "plot_script.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "kvcache/error.h"

#ifndef KVSTREAM_REPO_ROOT
#error "KVSTREAM_REPO_ROOT must be defined by the build"
#endif

extern char** environ;

namespace kvstream {
namespace {

// The scripts' agreed exit status for "import matplotlib failed".
constexpr int kNoMatplotlib = 3;

struct SpawnResult {
  bool started = false;
  int error = 0;   ///< errno of a failed spawn
  int status = 0;  ///< exit status, or 128 + signal
};

// Runs `argv` (argv[0] looked up in PATH) and waits. The child's stdout goes to our stderr, and
// its stderr to /dev/null when `quiet`.
SpawnResult spawn_and_wait(std::vector<std::string> argv_s, bool quiet) {
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // The script's chatter joins our diagnostics on stderr; stdout stays kvstream's report.
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  if (quiet) posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv_s[0].c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  SpawnResult r;
  if (rc != 0) {
    r.error = rc;
    return r;
  }
  r.started = true;
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR)
      throw kvcache::Error(fmt::format("waiting for {}: {}", argv_s[0], std::strerror(errno)));
  }
  r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  return r;
}

}  // namespace

std::filesystem::path plot_script_path(const std::string& flag, std::string_view default_name) {
  std::error_code ec;
  if (!flag.empty()) {
    if (!std::filesystem::is_regular_file(flag, ec)) {
      throw kvcache::Error(fmt::format("--plot-script {}: no such file", flag));
    }
    return flag;
  }
  const std::filesystem::path p = std::filesystem::path(KVSTREAM_REPO_ROOT) / "scripts" / default_name;
  return std::filesystem::is_regular_file(p, ec) ? p : std::filesystem::path{};
}

PlotResult run_plot_script(const std::string& python, const std::filesystem::path& script,
                           const std::vector<std::string>& args) {
  const std::vector<std::string> candidates = python.empty()
                                                  ? std::vector<std::string>{"python3", "/usr/bin/python3"}
                                                  : std::vector<std::string>{python};
  // Probe each interpreter quietly first, so a python3 without matplotlib earlier on PATH costs a
  // fraction of a second and no confusing traceback before the one that works.
  std::string tried;
  bool any_started = false;
  std::string chosen;
  for (const std::string& py : candidates) {
    const SpawnResult r = spawn_and_wait({py, "-c", "import matplotlib"}, true);
    tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", py,
                         !r.started      ? std::strerror(r.error)
                         : r.status == 0 ? "ok"
                                         : "no matplotlib");
    any_started = any_started || r.started;
    if (r.started && r.status == 0) {
      chosen = py;
      break;
    }
  }
  if (chosen.empty()) return {any_started ? PlotStatus::no_matplotlib : PlotStatus::no_python, tried};
  std::vector<std::string> argv{chosen, script.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const SpawnResult r = spawn_and_wait(std::move(argv), false);
  if (r.started && r.status == 0) return {PlotStatus::drawn, chosen};
  if (r.started && r.status == kNoMatplotlib)
    return {PlotStatus::no_matplotlib, chosen + ": importing matplotlib failed"};
  return {PlotStatus::failed, fmt::format("{} {} exited with status {}", chosen, script.string(), r.status)};
}

bool draw_plot(const std::string& python, const std::string& script_flag, std::string_view default_script,
               const std::vector<std::string>& args, std::string_view what) {
  const std::filesystem::path script = plot_script_path(script_flag, default_script);
  if (script.empty()) {
    std::fprintf(stderr, "kvstream: warning: no %s plot: scripts/%.*s not found in %s (pass --plot-script)\n",
                 std::string(what).c_str(), static_cast<int>(default_script.size()), default_script.data(),
                 KVSTREAM_REPO_ROOT);
    return false;
  }
  const PlotResult r = run_plot_script(python, script, args);
  switch (r.status) {
    case PlotStatus::drawn:
      return true;
    case PlotStatus::no_python:
      std::fprintf(stderr, "kvstream: warning: no %s plot: python3 not found (%s); data files were written\n",
                   std::string(what).c_str(), r.detail.c_str());
      return false;
    case PlotStatus::no_matplotlib:
      std::fprintf(stderr,
                   "kvstream: warning: no %s plot: %s (apt-get install python3-matplotlib); data files were "
                   "written\n",
                   std::string(what).c_str(), r.detail.c_str());
      return false;
    case PlotStatus::failed:
      break;
  }
  throw kvcache::Error(fmt::format("plotting {} failed: {} (data files were written)", what, r.detail));
}

}  // namespace kvstream
