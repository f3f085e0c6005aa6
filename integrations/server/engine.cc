#include "engine.h"

#include <fmt/format.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "engine_state.h"
#include "kvcache/error.h"

namespace kvserve {

using kvcache::llama::Decoder;

namespace {

std::uint64_t random_u64() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) | rd();
}

std::string new_id() { return fmt::format("s-{:016x}", random_u64()); }

const char* where_name(Session::Where w) {
  switch (w) {
    case Session::Where::resident:
      return "resident";
    case Session::Where::parked:
      return "parked";
    case Session::Where::corrupt:
      return "corrupt";
  }
  return "?";
}

}  // namespace

void Engine::State::log(const std::string& line) const {
  if (opt.log) {
    opt.log(line);
  } else {
    std::fprintf(stderr, "[kvstream serve] %s\n", line.c_str());
  }
}

std::size_t Engine::State::pages_bound(std::uint64_t tokens) const {
  // Per layer: pinned and window pages, each up to one partly used page, plus a window ring whose
  // oldest page is partly consumed, plus one token of slack for a pin planned before a release.
  // page_tokens is the smaller of the two regions' tokens per page, so the bound holds whichever
  // region the tokens sit in.
  const std::uint64_t t = std::min<std::uint64_t>(tokens, budget) + 1;
  return static_cast<std::size_t>((t + page_tokens - 1) / page_tokens + 2) * model->config.n_layers;
}

std::unique_ptr<Decoder> Engine::State::new_decoder() const {
  kvcache::llama::CacheOptions c = opt.cache;
  c.pool = pool;
  return std::make_unique<Decoder>(model, c);
}

std::shared_ptr<Session> Engine::State::new_session(const std::string& id, bool ephemeral) const {
  auto s = std::make_shared<Session>();
  s->meta.id = id;
  s->meta.model = fingerprint;
  s->meta.created_unix = s->meta.last_used_unix = session_clock_now();
  s->ephemeral = ephemeral;
  if (ephemeral) s->meta.history.reset();  // dropped when its request ends: nothing to match
  s->decoder = new_decoder();
  return s;
}

void Engine::State::refresh(Session& s) const {
  if (s.decoder) s.stats = s.decoder->cache().stats();
}

Engine::Engine(std::shared_ptr<const kvcache::llama::ModelWeights> model,
               std::shared_ptr<const kvcache::llama::TextTokenizer> tokenizer, EngineOptions options)
    : state_(std::make_unique<State>(std::move(model), std::move(tokenizer), std::move(options))) {
  State& s = *state_;
  if (!s.opt.store) throw kvcache::InvalidArgument("Engine: a session store is required");
  if (!s.model || !s.tokenizer)
    throw kvcache::InvalidArgument("Engine: a model and a tokenizer are required");
  const kvcache::llama::ModelConfig& c = s.model->config;
  s.fingerprint =
      fmt::format("{} dim {} hidden {} layers {} heads {}/{} vocab {}", s.model->path.filename().string(),
                  c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size);
  {
    // A decoder on a private one-page-budget pool tells the page size and budget; it holds nothing.
    kvcache::llama::CacheOptions probe = s.opt.cache;
    probe.pool = nullptr;
    probe.max_kv_bytes = std::size_t{1} << 20;
    const Decoder d(s.model, probe);
    s.budget = d.cache().policy().budget();
    // A pinned region stored wider than the window (--pinned-dtype f16 over q4) fits fewer tokens
    // in a page: bound every region by the smaller page (see pages_bound).
    s.page_tokens = std::min(d.cache().config().page_tokens, d.cache().config().pinned_layout().page_tokens);
    s.pool = std::make_shared<kvcache::PagePool>(
        kvcache::PagePoolOptions{d.cache().config().layout().page_bytes(), s.opt.pool_bytes});
  }
  s.pages_max = s.pool->stats().pages_max;
  if (s.pages_bound(2) > s.pages_max) {
    throw kvcache::InvalidArgument(fmt::format(
        "--pool-mib: the pool holds {} pages, one session needs at least {}", s.pages_max, s.pages_bound(2)));
  }
  ChatStops stops = chat_stops(s.opt.chat_template, *s.tokenizer);
  s.chat_end_tokens = std::move(stops.tokens);
  s.chat_stop_texts = std::move(stops.texts);
  s.created_unix = static_cast<std::int64_t>(session_clock_now());
  s.load_index();
  s.thread = std::thread([&s] {
    oneapi::tbb::task_arena arena(s.opt.threads > 0 ? s.opt.threads : oneapi::tbb::task_arena::automatic);
    arena.execute([&s] { s.run(); });
  });
}

Engine::~Engine() {
  shutdown();
  if (state_->thread.joinable()) state_->thread.join();
}

const std::string& Engine::model_name() const noexcept { return state_->opt.model_name; }

const RequestLimits& Engine::limits() const noexcept { return state_->opt.limits; }

nlohmann::json Engine::model_card() const {
  const State& s = *state_;
  nlohmann::json meta = s.opt.model_details;
  meta["chat_template"] = s.opt.chat_template.name();
  return {{"id", s.opt.model_name},
          {"object", "model"},
          {"created", s.created_unix},
          {"owned_by", "kvstream"},
          {"meta", std::move(meta)}};
}

bool Engine::shutting_down() const noexcept {
  std::lock_guard lk(state_->mu);
  return state_->stopping;
}

void Engine::shutdown() {
  State& s = *state_;
  std::unique_lock lk(s.mu);
  s.stopping = true;
  s.cv.notify_all();
  s.cv.wait(lk, [&] { return s.stopped; });
}

std::shared_ptr<Job> Engine::submit(CompletionRequest request) {
  State& s = *state_;
  std::vector<std::int32_t> tokens = s.tokenizer->encode(request.prompt, false, false, false);
  // The stream's pending token (or BOS) goes first, so a request feeds prompt + 1 tokens.
  if (tokens.size() + 1 > s.budget) {
    throw ApiError(
        400, "prompt",
        fmt::format("the prompt is {} tokens; with the token before it that exceeds the cache budget of {} "
                    "tokens (--budget)",
                    tokens.size(), s.budget));
  }
  if (!request.session && s.pages_bound(tokens.size() + 1 + request.max_tokens) > s.pages_max) {
    throw ApiError(
        400, "max_tokens",
        fmt::format("prompt and max_tokens need up to {} KV pages, the whole pool holds {} (--pool-mib)",
                    s.pages_bound(tokens.size() + 1 + request.max_tokens), s.pages_max));
  }
  return s.enqueue(std::make_shared<Job>(Job::Kind::completion, static_cast<GenerationOptions>(request),
                                         std::move(tokens)));
}

std::shared_ptr<Job> Engine::submit_chat(ChatRequest request) {
  State& s = *state_;
  const std::string prompt = s.opt.chat_template.render(request.messages);
  std::vector<std::int32_t> tokens =
      s.tokenizer->encode(prompt, s.tokenizer->add_bos_default() && s.tokenizer->bos() >= 0, false, true);
  if (tokens.empty()) throw ApiError(400, "messages", "the conversation encodes to no tokens");
  if (!request.session && s.pages_bound(tokens.size() + 1 + request.max_tokens) > s.pages_max) {
    throw ApiError(
        400, "max_tokens",
        fmt::format("the conversation and max_tokens need up to {} KV pages, the whole pool holds {} "
                    "(--pool-mib)",
                    s.pages_bound(tokens.size() + 1 + request.max_tokens), s.pages_max));
  }
  return s.enqueue(
      std::make_shared<Job>(Job::Kind::chat, static_cast<GenerationOptions>(request), std::move(tokens)));
}

std::shared_ptr<Job> Engine::State::enqueue(std::shared_ptr<Job> job) {
  {
    std::lock_guard lk(mu);
    if (stopping) throw ApiError(503, "", "the server is shutting down");
    incoming.push_back(job);
  }
  cv.notify_all();
  return job;
}

std::string Engine::create_session() {
  State& s = *state_;
  std::lock_guard lk(s.mu);
  if (s.stopping) throw ApiError(503, "", "the server is shutting down");
  if (s.sessions.size() >= s.opt.max_sessions) {
    const std::shared_ptr<Session> victim = s.chat_victim();
    if (!victim || !s.drop(*victim))
      throw ApiError(429, "session",
                     fmt::format("{} sessions exist (--max-sessions): delete one first", s.sessions.size()));
  }
  std::string id = new_id();
  while (s.sessions.count(id)) id = new_id();
  auto session = s.new_session(id, false);
  session->lru = ++s.tick;
  s.sessions[id] = std::move(session);
  return id;
}

nlohmann::json Engine::session_status(const std::string& id) {
  State& s = *state_;
  std::lock_guard lk(s.mu);
  const auto it = s.sessions.find(id);
  if (it == s.sessions.end()) throw ApiError(404, "session", "unknown session '" + id + "'");
  const Session& x = *it->second;
  nlohmann::json j = {
      {"id", id},
      {"object", "session"},
      {"state", where_name(x.where)},
      {"busy", x.busy},
      {"created", static_cast<std::int64_t>(x.meta.created_unix)},
      {"last_used", static_cast<std::int64_t>(x.meta.last_used_unix)},
      {"requests", x.meta.requests},
      {"tokens_prompted", x.meta.tokens_prompted},
      {"tokens_generated", x.meta.tokens_generated},
      {"tokens_seen", x.stats.tokens_seen},
      {"tokens_kept", x.stats.tokens_kept},
      {"tokens_pinned", x.stats.tokens_pinned},
      {"tokens_evicted", x.stats.tokens_evicted},
      {"kv_bytes", x.where == Session::Where::resident ? x.stats.kv_bytes : 0},
      {"kv_bytes_when_resident", x.stats.kv_bytes},
      {"pages", x.where == Session::Where::resident ? x.stats.pages : 0},
      {"origin", x.meta.origin},
      {"history_tokens", x.meta.history ? nlohmann::json(x.meta.history->size()) : nlohmann::json(nullptr)},
  };
  if (!x.problem.empty()) j["error"] = x.problem;
  if (!x.recovery.empty()) j["recovery"] = x.recovery;
  return j;
}

nlohmann::json Engine::list_sessions() {
  State& s = *state_;
  std::lock_guard lk(s.mu);
  nlohmann::json data = nlohmann::json::array();
  for (const auto& [id, x] : s.sessions)
    data.push_back(
        {{"id", id}, {"state", where_name(x->where)}, {"busy", x->busy}, {"origin", x->meta.origin}});
  return {{"object", "list"}, {"data", data}};
}

void Engine::delete_session(const std::string& id) {
  State& s = *state_;
  std::lock_guard lk(s.mu);
  const auto it = s.sessions.find(id);
  if (it == s.sessions.end()) throw ApiError(404, "session", "unknown session '" + id + "'");
  Session& x = *it->second;
  if (x.busy) throw ApiError(409, "session", "a request is running on session '" + id + "'");
  try {
    s.opt.store->remove(id);
  } catch (const std::exception& e) {
    throw ApiError(500, "session", std::string("could not remove it from the store: ") + e.what());
  }
  if (x.where == Session::Where::resident) s.committed -= x.stats.pages;
  s.prefix_index.erase(id);
  s.sessions.erase(it);  // a resident decoder releases its pages here
}

EngineAccounting Engine::accounting() {
  State& s = *state_;
  std::lock_guard lk(s.mu);
  EngineAccounting a;
  const kvcache::PagePoolStats p = s.pool->stats();
  a.pool_pages_in_use = p.pages_in_use;
  a.pool_pages_max = p.pages_max;
  a.committed_pages = s.committed;
  for (const auto& [id, x] : s.sessions) {
    if (x->where == Session::Where::resident) {
      ++a.sessions_resident;
      if (!x->busy) a.resident_pages += x->stats.pages;
    }
    if (x->where == Session::Where::parked) ++a.sessions_parked;
    if (x->where == Session::Where::corrupt) ++a.sessions_corrupt;
  }
  for (const ActiveJob& j : s.active)
    a.resident_pages += j.session->stats.pages;  // busy ones, refreshed per step
  a.requests_active = s.active.size();
  a.requests_queued = s.incoming.size();
  a.parks = s.parks;
  a.restores = s.restores;
  a.refusals = s.refusals;
  a.reservation_overruns = s.overruns;
  return a;
}

std::string Engine::metrics_text() {
  const EngineAccounting a = accounting();
  State& s = *state_;
  std::lock_guard lk(s.mu);
  double rate = 0;
  if (s.rate_window.size() >= 2) {
    const auto& [t0, n0] = s.rate_window.front();
    const auto& [t1, n1] = s.rate_window.back();
    if (t1 > t0) rate = static_cast<double>(n1 - n0) / (t1 - t0);
  }
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  const double page_bytes = static_cast<double>(s.pool->page_bytes());
  metric("kvstream_pool_pages_used", "gauge", "KV pages allocated from the shared pool",
         double(a.pool_pages_in_use));
  metric("kvstream_pool_pages_free", "gauge", "KV pages the pool budget still allows",
         double(a.pool_pages_max - a.pool_pages_in_use));
  metric("kvstream_pool_pages_max", "gauge", "KV pages the pool budget allows (--pool-mib)",
         double(a.pool_pages_max));
  metric("kvstream_pool_bytes_used", "gauge", "bytes of KV pages allocated",
         double(a.pool_pages_in_use) * page_bytes);
  metric("kvstream_pool_pages_committed", "gauge",
         "pages reserved by running requests plus pages of idle sessions", double(a.committed_pages));
  metric("kvstream_sessions_live", "gauge", "sessions whose cache is in memory", double(a.sessions_resident));
  metric("kvstream_sessions_parked", "gauge", "sessions parked in the store", double(a.sessions_parked));
  metric("kvstream_sessions_corrupt", "gauge", "sessions whose stored record is unusable",
         double(a.sessions_corrupt));
  metric("kvstream_requests_active", "gauge", "completions running", double(a.requests_active));
  metric("kvstream_requests_queued", "gauge", "completions waiting for admission", double(a.requests_queued));
  metric("kvstream_tokens_per_second", "gauge", "tokens generated per second over the last 10 s", rate);
  metric("kvstream_requests_total", "counter", "completions admitted", double(s.requests));
  metric("kvstream_refusals_total", "counter", "completions refused with 503 for lack of KV memory",
         double(a.refusals));
  metric("kvstream_cancelled_total", "counter", "completions stopped because the client went away",
         double(s.cancelled));
  metric("kvstream_chat_session_reuses_total", "counter",
         "chat requests whose conversation continued a session's history", double(s.chat_reuses));
  metric("kvstream_chat_cached_tokens_total", "counter",
         "conversation tokens chat requests did not feed again", double(s.chat_cached_tokens));
  metric("kvstream_parks_total", "counter", "sessions parked to the store", double(a.parks));
  metric("kvstream_restores_total", "counter", "sessions restored from the store", double(a.restores));
  metric("kvstream_tokens_generated_total", "counter", "tokens sampled", double(s.tokens_generated));
  metric("kvstream_tokens_prompt_total", "counter", "prompt tokens fed", double(s.tokens_prompted));
  metric("kvstream_decode_steps_total", "counter", "decode steps (one token for each of a batch of streams)",
         double(s.decode_steps));
  metric("kvstream_decode_rows_total", "counter", "stream-tokens decoded over all steps",
         double(s.decode_rows));
  std::uint64_t evicted = 0;
  for (const auto& [id, x] : s.sessions) evicted += x->stats.tokens_evicted;
  metric("kvstream_tokens_evicted", "gauge", "tokens evicted from the caches of the sessions that exist",
         double(evicted));
  return out;
}

}  // namespace kvserve
