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
      if (a.fed == a.feed_end) a.pending = a.input.back();
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

void Engine::State::admit(const std::shared_ptr<Job>& job) {
  const CompletionRequest& r = job->request;
  std::shared_ptr<Session> s;
  std::size_t need = 0;
  try {
    if (r.session) {
      const auto it = sessions.find(*r.session);
      if (it == sessions.end()) throw ApiError(404, "session", "unknown session '" + *r.session + "'");
      s = it->second;
      if (s->where == Session::Where::corrupt)
        throw ApiError(409, "session", "session '" + *r.session + "' cannot be restored: " + s->problem);
      if (s->busy)
        throw ApiError(409, "session", "a request is already running on session '" + *r.session + "'");
    } else {
      s = new_session("", true);
    }
    if (s->meta.pending < 0 && job->prompt_tokens.empty() &&
        !(tokenizer->add_bos_default() && tokenizer->bos() >= 0))
      throw ApiError(400, "prompt", "a new stream needs a prompt: this model's tokenizer adds no BOS token");
    need = pages_bound(std::uint64_t{s->stats.tokens_kept} + job->prompt_tokens.size() + 1 + r.max_tokens);
    if (need > pages_max) {
      throw ApiError(400, "max_tokens",
                     fmt::format("this request may need {} KV pages, the whole pool holds {} (--pool-mib)",
                                 need, pages_max));
    }
    auto held = [&] { return s->where == Session::Where::resident && !s->ephemeral ? s->stats.pages : 0; };
    // Park least recently used idle sessions until the reservation fits.
    while (committed - held() + need > pages_max) {
      Session* victim = nullptr;
      for (auto& [id, x] : sessions) {
        if (x.get() == s.get() || x->busy || x->where != Session::Where::resident) continue;
        if (victim == nullptr || x->lru < victim->lru) victim = x.get();
      }
      if (victim == nullptr || !park(*victim)) {
        ++refusals;
        throw ApiError(
            503, "",
            fmt::format("out of KV memory: running requests hold {} of {} pages and no idle session "
                        "can be parked; retry later",
                        committed, pages_max));
      }
    }
    if (s->where == Session::Where::parked) restore(*s);  // ApiError on a bad record (`s` is then corrupt)
    committed = committed - held() + need;
  } catch (const ApiError& e) {
    job->refuse(e);
    return;
  }

  s->busy = true;
  s->reserved_pages = need;
  s->lru = ++tick;
  ++requests;
  const std::uint64_t state = r.seed                   ? seeded_state(*r.seed)
                              : s->meta.rng_state != 0 ? s->meta.rng_state
                                                       : seeded_state(random_seed());
  ActiveJob a(job, s, r);
  a.sampler.set_rng_state(state);
  // An empty stream starts with BOS when the tokenizer adds one (as kvstream generate does).
  const bool fresh = s->meta.pending < 0;
  const bool with_bos = fresh && tokenizer->add_bos_default() && tokenizer->bos() >= 0;
  if (!fresh) a.input.push_back(s->meta.pending);
  if (with_bos) a.input.push_back(tokenizer->bos());
  a.input.insert(a.input.end(), job->prompt_tokens.begin(), job->prompt_tokens.end());
  a.prompt_added = job->prompt_tokens.size() + (with_bos ? 1 : 0);
  // With max_tokens 0 the prompt's last token stays pending: the next request feeds it first.
  a.feed_end = r.max_tokens == 0 ? a.input.size() - 1 : a.input.size();
  {
    std::lock_guard jl(job->mu);
    job->phase = Job::Phase::running;
    job->session_id = s->ephemeral ? "" : s->meta.id;
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
  a.fed += n;
  tokens_prompted += n;
}

void Engine::State::sample(ActiveJob& a) {
  const std::int32_t tok = a.sampler.sample(a.logits);
  ++a.generated;
  ++tokens_generated;
  a.pending = tok;
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
      a.job->prompt_count = a.prompt_added;
      a.job->completion_count = a.generated;
    }
    a.job->finish(a.reason, a.why);
  }
  std::erase_if(active, [](const ActiveJob& a) { return a.done; });
}

}  // namespace kvserve
