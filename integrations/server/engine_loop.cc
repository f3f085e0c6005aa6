// The engine thread: admission (sessions, memory reservation, parking), the step loop over every
// running request, and retiring finished ones.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "engine_state.h"
#include "kvcache/error.h"

namespace kvserve {

using kvcache::llama::Decoder;
using kvcache::llama::Sampler;

namespace {

double mono_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
std::uint64_t random_seed() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) | rd();
}
// The RNG state a Sampler seeded with `seed` starts from.
std::uint64_t seeded_state(std::uint64_t seed) { return Sampler({1.f, 1.f, seed}).rng_state(); }

}  // namespace

void Engine::State::run() {
  std::unique_lock lk(mu);
  for (;;) {
    cv.wait(lk, [&] { return stopping || !incoming.empty() || !active.empty(); });
    if (stopping) break;
    while (!incoming.empty()) {
      std::shared_ptr<Job> job = std::move(incoming.front());
      incoming.pop_front();
      admit(job);
    }
    if (active.empty()) continue;
    lk.unlock();
    step_all();  // the decoders of running requests belong to this thread: no lock needed
    lk.lock();
    for (ActiveJob& a : active) refresh(*a.session);
    retire_done();
    rate_window.emplace_back(mono_now(), tokens_generated.load());
    while (rate_window.size() > 2 && rate_window.back().first - rate_window.front().first > 10.0)
      rate_window.pop_front();
  }
  // Shutdown after the current step: running requests end with their stream whole (a prompt
  // still being fed is fed up to its last token, which stays pending), queued ones are refused,
  // and every live session is parked.
  for (ActiveJob& a : active) {
    if (a.done) continue;
    if (!a.prefilled) {
      a.feed_end = a.input.size() - 1;
      lk.unlock();
      try {
        while (a.fed < a.feed_end) feed_chunk(a);
      } catch (const std::exception& e) {
        log(std::string("shutdown: could not finish feeding a prompt: ") + e.what());
      }
      lk.lock();
      // As after a failed step: the next unfed token is the pending one, the rest is dropped.
      a.pending = a.input[a.fed];
    }
    a.done = true;
    a.reason = "shutdown";
  }
  retire_done();
  for (auto& job : incoming) job->refuse(ApiError(503, "", "the server is shutting down"));
  incoming.clear();
  std::size_t parked = 0, failed = 0;
  for (auto& [id, s] : sessions) {
    if (s->where == Session::Where::resident) ++(park(*s) ? parked : failed);
  }
  log(fmt::format("shutdown: {} sessions parked in the {}{}", parked, opt.store->describe(),
                  failed ? fmt::format(", {} FAILED (see above)", failed) : std::string()));
  stopped = true;
  cv.notify_all();
}

std::shared_ptr<Session> Engine::State::named_session(const std::string& id) const {
  const auto it = sessions.find(id);
  if (it == sessions.end()) throw ApiError(404, "session", "unknown session '" + id + "'");
  const std::shared_ptr<Session>& s = it->second;
  if (s->where == Session::Where::corrupt)
    throw ApiError(409, "session", "session '" + id + "' cannot be restored: " + s->problem);
  if (s->busy) throw ApiError(409, "session", "a request is already running on session '" + id + "'");
  return s;
}

void Engine::State::admit(const std::shared_ptr<Job>& job) {
  const GenerationOptions& r = job->request;
  const bool chat = job->kind == Job::Kind::chat;
  std::shared_ptr<Session> s, victim;
  std::size_t matched = 0;  // chat: the conversation's tokens the session's history covers
  std::size_t need = 0;
  try {
    if (chat) {
      s = chat_session(*job, matched, victim);
    } else if (r.session) {
      s = named_session(*r.session);
    } else {
      s = new_session("", true);
    }
    if (!chat && s->meta.pending < 0 && job->tokens.empty() &&
        !(tokenizer->add_bos_default() && tokenizer->bos() >= 0))
      throw ApiError(400, "prompt", "a new stream needs a prompt: this model's tokenizer adds no BOS token");
    const std::size_t adds = chat ? job->tokens.size() - matched : job->tokens.size();
    need = pages_bound(std::uint64_t{s->stats.tokens_kept} + adds + 1 + r.max_tokens);
    if (need > pages_max) {
      throw ApiError(400, "max_tokens",
                     fmt::format("this request may need {} KV pages, the whole pool holds {} (--pool-mib)",
                                 need, pages_max));
    }
    auto held = [&] { return s->where == Session::Where::resident && !s->ephemeral ? s->stats.pages : 0; };
    // Park least recently used idle sessions until the reservation fits.
    while (committed - held() + need > pages_max) {
      Session* lru = nullptr;
      for (auto& [id, x] : sessions) {
        if (x.get() == s.get() || x->busy || x->where != Session::Where::resident) continue;
        if (lru == nullptr || x->lru < lru->lru) lru = x.get();
      }
      if (lru == nullptr || !park(*lru)) {
        ++refusals;
        throw ApiError(
            503, "",
            fmt::format("out of KV memory: running requests hold {} of {} pages and no idle session "
                        "can be parked; retry later",
                        committed, pages_max));
      }
    }
    if (victim && !drop(*victim)) {
      throw ApiError(429, "session",
                     fmt::format("{} sessions exist (--max-sessions) and the least recently used "
                                 "chat session could not be removed",
                                 sessions.size()));
    }
    if (s->where == Session::Where::parked) restore(*s);  // ApiError on a bad record (`s` is then corrupt)
    committed = committed - held() + need;
  } catch (const ApiError& e) {
    job->refuse(e);
    return;
  }
  if (chat && !sessions.count(s->meta.id)) sessions[s->meta.id] = s;
  if (!chat && !s->ephemeral && s->meta.history) {
    // /v1/completions appends text the chat endpoint cannot account for: from here on the
    // session has no recorded history, and no conversation can match it.
    s->meta.history.reset();
    prefix_index.erase(s->meta.id);
  }

  s->busy = true;
  s->reserved_pages = need;
  s->lru = ++tick;
  ++requests;
  // A chat answer depends only on its request (OpenAI's semantics): its sampler never continues
  // the session's RNG, so finding the conversation in a session changes nothing but the speed.
  const std::uint64_t state = r.seed                            ? seeded_state(*r.seed)
                              : !chat && s->meta.rng_state != 0 ? s->meta.rng_state
                                                                : seeded_state(random_seed());
  std::vector<std::string> stops = r.stop;
  if (chat) stops.insert(stops.end(), chat_stop_texts.begin(), chat_stop_texts.end());
  ActiveJob a(job, s, r, std::move(stops));
  a.sampler.set_rng_state(state);
  a.chat = chat;
  if (s->meta.history) a.fed_tokens.emplace();
  if (chat) {
    // The session's pending token is the history's last one, so feeding resumes right there.
    a.input.assign(job->tokens.begin() + static_cast<std::ptrdiff_t>(matched > 0 ? matched - 1 : 0),
                   job->tokens.end());
    a.prompt_added = job->tokens.size() - matched;
  } else {
    // An empty stream starts with BOS when the tokenizer adds one (as kvstream generate does).
    const bool fresh = s->meta.pending < 0;
    const bool with_bos = fresh && tokenizer->add_bos_default() && tokenizer->bos() >= 0;
    if (!fresh) a.input.push_back(s->meta.pending);
    if (with_bos) a.input.push_back(tokenizer->bos());
    a.input.insert(a.input.end(), job->tokens.begin(), job->tokens.end());
    a.prompt_added = job->tokens.size() + (with_bos ? 1 : 0);
  }
  // With max_tokens 0 the prompt's last token stays pending: the next request feeds it first.
  a.feed_end = r.max_tokens == 0 ? a.input.size() - 1 : a.input.size();
  {
    std::lock_guard jl(job->mu);
    job->phase = Job::Phase::running;
    job->session_id = s->ephemeral ? "" : s->meta.id;
    job->cached_count = matched > 0 ? matched - 1 : 0;
  }
  if (matched > 0) {
    ++chat_reuses;
    chat_cached_tokens += matched - 1;
  }
  job->cv.notify_all();
  active.push_back(std::move(a));
}

void Engine::State::feed_chunk(ActiveJob& a) {
  Decoder& d = *a.session->decoder;
  // Decoder::prefill's own batching rule, so chunked feeding equals one prefill call.
  const std::uint32_t kept = d.cache().n_kept();
  const std::size_t room = d.detector() != nullptr ? 1 : (budget > kept ? budget - kept : 0);
  const std::size_t n =
      std::max<std::size_t>(1, std::min({a.feed_end - a.fed, room, std::size_t{Decoder::kMaxBatch}}));
  a.logits = d.prefill(std::span(a.input).subspan(a.fed, n));
  if (a.fed_tokens)
    a.fed_tokens->insert(a.fed_tokens->end(), a.input.begin() + static_cast<std::ptrdiff_t>(a.fed),
                         a.input.begin() + static_cast<std::ptrdiff_t>(a.fed + n));
  a.fed += n;
  tokens_prompted += n;
}

void Engine::State::sample(ActiveJob& a) {
  const std::int32_t tok = a.sampler.sample(a.logits);
  ++a.generated;
  ++tokens_generated;
  a.pending = tok;
  if (a.chat && std::find(chat_end_tokens.begin(), chat_end_tokens.end(), tok) != chat_end_tokens.end()) {
    // The model ended its turn: the token stays pending, the last of the session's history, which
    // is what the template writes after this answer when the client sends it back.
    a.prev = tok;
    a.done = true;
    a.reason = "stop";
    return;
  }
  // BOS or EOS means the model ended a text and starts another: a blank line, as kvstream
  // generate shows it.
  const bool boundary = tok == tokenizer->bos() || tok == tokenizer->eos();
  const bool stop = a.stops.append(boundary ? std::string_view("\n\n") : tokenizer->decode(a.prev, tok));
  a.prev = tok;
  if (std::string ready = a.stops.take_ready(); !ready.empty()) a.job->publish(std::move(ready));
  if (stop) {
    a.done = true;
    a.reason = "stop";
  } else if (a.generated >= a.job->request.max_tokens) {
    a.done = true;
    a.reason = "length";
  }
}

void Engine::State::step_all() {
  std::vector<ActiveJob*> decode;
  for (ActiveJob& a : active) {
    if (a.done) continue;
    try {
      if (!a.prefilled) {
        if (a.fed < a.feed_end) feed_chunk(a);
        if (a.fed < a.feed_end) continue;
        a.prefilled = true;
        a.prev = a.input.back();
        if (a.job->request.max_tokens == 0) {
          a.pending = a.input.back();
          a.done = true;
          a.reason = "length";
        } else {
          sample(a);
        }
      } else if (a.job->cancelled.load()) {
        a.done = true;
        a.reason = "cancelled";
      } else {
        decode.push_back(&a);
      }
    } catch (const std::exception& e) {
      // Not expected: admission reserved the pages. The cache is unchanged by the failed call;
      // the next unfed token becomes the pending one (the rest of a prompt is dropped).
      if (!a.prefilled) a.pending = a.input[a.fed];
      a.done = true;
      a.reason = "error";
      a.why = e.what();
    }
  }
  if (decode.empty()) return;
  // Continuous batching: one forward pass feeds the pending token of every decoding request (in
  // chunks of the batch's capacity); each row's logits equal its own Decoder::step's.
  const std::size_t cap = decode_batch.max_rows();
  for (std::size_t first = 0; first < decode.size(); first += cap) {
    const std::size_t n = std::min(cap, decode.size() - first);
    batch_decoders.clear();
    batch_tokens.clear();
    for (std::size_t i = first; i < first + n; ++i) {
      batch_decoders.push_back(decode[i]->session->decoder.get());
      batch_tokens.push_back(decode[i]->pending);
    }
    batch_errors.assign(n, nullptr);
    ++decode_steps;
    decode_rows += n;
    decode_batch.step(batch_decoders, batch_tokens, batch_errors);
    for (std::size_t i = 0; i < n; ++i) {
      ActiveJob& a = *decode[first + i];
      if (batch_errors[i]) {
        // Not expected (admission reserved the pages); the cache is unchanged, the token stays pending.
        a.done = true;
        a.reason = "error";
        try {
          std::rethrow_exception(batch_errors[i]);
        } catch (const std::exception& e) {
          a.why = e.what();
        } catch (...) {
          a.why = "unknown error";
        }
        continue;
      }
      a.logits = decode_batch.logits(i);
      if (a.fed_tokens) a.fed_tokens->push_back(a.pending);
      a.pending = -1;
      sample(a);
    }
  }
}

void Engine::State::retire_done() {
  for (ActiveJob& a : active) {
    if (!a.done) continue;
    Session& s = *a.session;
    if (std::string rest = a.stops.take_rest(); !rest.empty()) a.job->publish(std::move(rest));
    record_history(s, a);
    s.meta.pending = a.pending;
    s.meta.last_token = a.pending;
    s.meta.rng_state = a.sampler.rng_state();
    s.meta.tokens_prompted += a.prompt_added;
    s.meta.tokens_generated += a.generated;
    ++s.meta.requests;
    s.meta.last_used_unix = session_clock_now();
    refresh(s);
    if (s.stats.pages > s.reserved_pages) {
      ++overruns;
      log(fmt::format("BUG: session {} holds {} pages, {} were reserved", s.meta.id, s.stats.pages,
                      s.reserved_pages));
    }
    committed -= s.reserved_pages;
    s.reserved_pages = 0;
    s.busy = false;
    s.lru = ++tick;
    if (!s.ephemeral) committed += s.stats.pages;
    if (a.reason == "cancelled") ++cancelled;
    {
      std::lock_guard jl(a.job->mu);
      a.job->prompt_count = a.chat ? a.job->tokens.size() : a.prompt_added;
      a.job->completion_count = a.generated;
    }
    a.job->finish(a.reason, a.why);
  }
  std::erase_if(active, [](const ActiveJob& a) { return a.done; });
}

}  // namespace kvserve
