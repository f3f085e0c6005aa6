// How chat requests find their session: by name, or by the prefix index over chat sessions'
// histories; new chat sessions within --max-sessions; each session's history after a request.
#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "engine_state.h"

namespace kvserve {
namespace {

std::string new_chat_id() {
  std::random_device rd;
  return fmt::format("chat-{:08x}{:08x}", rd(), rd());
}

}  // namespace

std::shared_ptr<Session> Engine::State::chat_session(const Job& job, std::size_t& matched,
                                                     std::shared_ptr<Session>& victim) {
  const std::vector<std::int32_t>& tokens = job.tokens;
  if (job.request.session) {
    std::shared_ptr<Session> s = named_session(*job.request.session);
    const std::string& id = s->meta.id;
    if (!s->meta.history) {
      throw ApiError(409, "session",
                     "session '" + id +
                         "' was continued with /v1/completions, so its token history is not recorded and a "
                         "conversation cannot be checked against it: use a new session");
    }
    const std::vector<std::int32_t>& h = *s->meta.history;
    const auto diff = std::mismatch(h.begin(), h.end(), tokens.begin(), tokens.end());
    if (diff.first != h.end()) {
      throw ApiError(
          400, "messages",
          fmt::format(
              "the conversation does not continue session '{}': its history of {} tokens {} "
              "(a conversation sent to a session must start with everything it already holds)",
              id, h.size(),
              diff.second == tokens.end()
                  ? fmt::format("is longer than the conversation's {} tokens", tokens.size())
                  : fmt::format("differs from the conversation at token {}", diff.first - h.begin())));
    }
    matched = h.size();
    return s;
  }
  const auto history_of = [this](const std::string& id) -> std::optional<std::span<const std::int32_t>> {
    const auto it = sessions.find(id);
    if (it == sessions.end()) return std::nullopt;
    const Session& x = *it->second;
    if (x.busy || x.where == Session::Where::corrupt || !x.meta.history) return std::nullopt;
    return std::span<const std::int32_t>(*x.meta.history);
  };
  if (const std::optional<PrefixMatch> m = prefix_index.longest_prefix(tokens, history_of)) {
    matched = m->length;
    return sessions.at(m->id);
  }
  matched = 0;
  if (sessions.size() >= opt.max_sessions) {
    victim = chat_victim();
    if (!victim) {
      throw ApiError(
          429, "session",
          fmt::format("{} sessions exist (--max-sessions) and none of them is an idle chat session to "
                      "replace: delete one first",
                      sessions.size()));
    }
  }
  std::string id = new_chat_id();
  while (sessions.count(id)) id = new_chat_id();
  std::shared_ptr<Session> s = new_session(id, false);
  s->meta.origin = "chat";
  return s;
}

std::shared_ptr<Session> Engine::State::chat_victim() const {
  std::shared_ptr<Session> victim;
  for (const auto& [id, x] : sessions) {
    if (x->meta.origin != "chat" || x->busy) continue;
    if (!victim || x->lru < victim->lru) victim = x;
  }
  return victim;
}

bool Engine::State::drop(Session& s) {
  const std::string id = s.meta.id;  // `s` dies with its map entry
  try {
    opt.store->remove(id);
  } catch (const std::exception& e) {
    log("could not remove session " + id + " from the store (it stays): " + e.what());
    return false;
  }
  if (s.where == Session::Where::resident) committed -= s.stats.pages;
  prefix_index.erase(id);
  sessions.erase(id);  // a resident decoder releases its pages here
  log("session " + id + " (least recently used chat session) removed to stay within --max-sessions");
  return true;
}

void Engine::State::record_history(Session& s, const ActiveJob& a) {
  if (!s.meta.history || !a.fed_tokens) return;
  std::vector<std::int32_t>& h = *s.meta.history;
  // The history ends with the old pending token. The request either fed it first (it is then
  // a.fed_tokens' first) or left it pending (a.pending): either way it comes back below.
  if (!h.empty()) h.pop_back();
  h.insert(h.end(), a.fed_tokens->begin(), a.fed_tokens->end());
  if (a.pending >= 0) h.push_back(a.pending);
  if (s.meta.origin == "chat") prefix_index.put(s.meta.id, h);
}

}  // namespace kvserve
