// kvstream: infinite streaming generation and streaming perplexity on GGUF and llama2.c models through the
// kvcache library. See README.md in this folder.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "bench.h"
#include "compare.h"
#include "generate.h"
#include "inspect.h"
#include "kvcache/error.h"
#include "perplexity.h"
#include "serve.h"
#include "sweep.h"
#include "tokenize.h"

namespace {

// Error messages are one line: the contract with scripts that read stderr.
void report(const char* kind, const std::string& what) {
  std::string line = what;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fprintf(stderr, "kvstream: %s%s\n", kind, line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "kvstream: stream a GGUF (llama, qwen2) or llama2.c model through a paged KV cache with eviction "
      "(StreamingLLM sinks + window).\n"
      "A GGUF model brings its own tokenizer: --model file.gguf, no --tokenizer.\n"
      "Model files: --model/--tokenizer, else $KVCACHE_MODEL/$KVCACHE_TOKENIZER, else models/ in the repo, "
      "else\n"
      "../shared/models/ next to the repo (scripts/fetch_model.sh downloads stories260K.bin and "
      "tok512.bin)."};
  app.require_subcommand(1);
  kvstream::GenerateOptions gen;
  kvstream::PplOptions ppl;
  CLI::App* gen_cmd = kvstream::add_generate_command(app, gen);
  CLI::App* ppl_cmd = kvstream::add_ppl_command(app, ppl);
  kvstream::SweepOptions sweep;
  kvstream::InspectOptions inspect;
  CLI::App* sweep_cmd = kvstream::add_sweep_command(app, sweep);
  CLI::App* inspect_cmd = kvstream::add_inspect_command(app, inspect);
  kvstream::TokenizeOptions tokenize;
  CLI::App* tokenize_cmd = kvstream::add_tokenize_command(app, tokenize);
  kvstream::ServeOptions serve;
  CLI::App* serve_cmd = kvstream::add_serve_command(app, serve);
  kvstream::BenchOptions bench;
  CLI::App* bench_cmd = kvstream::add_bench_command(app, bench);
  kvstream::CompareOptions compare;
  CLI::App* compare_cmd = kvstream::add_compare_command(app, compare);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    report("", std::string(e.what()) + " (run with --help for usage)");
    return 2;  // usage error
  }

  try {
    // Each command's work runs in a task arena of --threads threads (sweep sizes its own arena from
    // --threads and --jobs; serve's engine thread enters one of --decode-threads).
    using kvstream::run_in_arena;
    if (gen_cmd->parsed()) return run_in_arena(gen.common, [&] { return kvstream::run_generate(gen); });
    if (ppl_cmd->parsed()) return run_in_arena(ppl.common, [&] { return kvstream::run_ppl(ppl); });
    if (sweep_cmd->parsed()) return kvstream::run_sweep(sweep);
    if (inspect_cmd->parsed())
      return run_in_arena(inspect.common, [&] { return kvstream::run_inspect(inspect); });
    if (tokenize_cmd->parsed()) return kvstream::run_tokenize(tokenize);
    if (serve_cmd->parsed()) return kvstream::run_serve(serve);
    if (compare_cmd->parsed()) return kvstream::run_compare(compare);
    if (bench_cmd->parsed()) return run_in_arena(bench.common, [&] { return kvstream::run_bench(bench); });
    return 2;
  } catch (const kvcache::PoolExhausted& e) {
    report("KV pool exhausted (raise --max-kv-mb or use a budgeted policy): ", e.what());
  } catch (const kvcache::Error& e) {
    report("", e.what());
  } catch (const std::exception& e) {
    report("internal error: ", e.what());
  }
  return 1;
}
