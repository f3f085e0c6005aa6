// Moving sessions between memory and the SessionStore: parking (snapshot, then release the pages),
// restoring, and reading the store's index at startup.
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>

#include "engine_state.h"
#include "kvcache/error.h"

namespace kvserve {
namespace {

std::vector<std::byte> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw kvcache::Error("cannot read " + p.string());
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* b = reinterpret_cast<const std::byte*>(bytes.data());
  return {b, b + bytes.size()};
}

void write_file(const std::filesystem::path& p, std::span<const std::byte> bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) throw kvcache::Error("cannot write " + p.string());
}

// The snapshot travels through one local file: StreamCache saves and restores files, a store
// holds blobs. Only the engine thread parks and restores, so one name per process suffices.
std::filesystem::path scratch_path(const EngineOptions& o) {
  return o.scratch_dir / (".kvstream-scratch-" + std::to_string(::getpid()) + ".snap");
}

}  // namespace

bool Engine::State::park(Session& s) {
  try {
    refresh(s);
    const std::filesystem::path scratch = scratch_path(opt);
    s.decoder->cache().save(scratch);
    const std::vector<std::byte> snapshot = read_file(scratch);
    std::filesystem::remove(scratch);
    s.meta.tokens_seen = s.stats.tokens_seen;
    s.meta.tokens_evicted = s.stats.tokens_evicted;
    s.meta.tokens_kept = s.stats.tokens_kept;
    s.meta.tokens_pinned = s.stats.tokens_pinned;
    s.meta.kv_bytes = s.stats.kv_bytes;
    opt.store->put(s.meta.id, encode_record(s.meta, snapshot));
  } catch (const std::exception& e) {
    log("could not park session " + s.meta.id + " (it stays in memory): " + e.what());
    return false;
  }
  committed -= s.stats.pages;
  s.decoder.reset();  // the pages go back to the pool
  s.where = Session::Where::parked;
  ++parks;
  return true;
}

void Engine::State::restore(Session& s) {
  std::optional<std::vector<std::byte>> blob;
  try {
    blob = opt.store->get(s.meta.id);
  } catch (const std::exception& e) {
    log("cannot read session " + s.meta.id + " from the store: " + e.what());
    throw ApiError(503, "session", std::string("the session store cannot be read: ") + e.what());
  }
  auto corrupt = [&](const std::string& why) {
    s.where = Session::Where::corrupt;
    s.problem = why;
    log("session " + s.meta.id + " is not restored: " + why);
    return ApiError(409, "session", "session " + s.meta.id + " cannot be restored: " + why);
  };
  if (!blob) throw corrupt("its record is missing from the " + opt.store->describe());
  try {
    SessionRecord rec = decode_record(*blob, s.meta.id + " in the " + opt.store->describe());
    if (rec.meta.model != fingerprint)
      throw corrupt("it was made with model '" + rec.meta.model + "', this server runs '" + fingerprint +
                    "'");
    const std::filesystem::path scratch = scratch_path(opt);
    write_file(scratch, rec.snapshot);
    auto decoder = new_decoder();
    try {
      decoder->restore_cache(scratch);
    } catch (...) {
      std::filesystem::remove(scratch);
      throw;
    }
    std::filesystem::remove(scratch);
    s.decoder = std::move(decoder);
    s.meta = std::move(rec.meta);
  } catch (const kvcache::FormatError& e) {
    throw corrupt(e.what());
  } catch (const kvcache::PoolExhausted&) {
    throw ApiError(503, "session", "no KV memory to restore the session into");
  }
  s.where = Session::Where::resident;
  refresh(s);
  committed += s.stats.pages;
  ++restores;
}

void Engine::State::load_index() {
  std::map<std::string, std::string> torn;  // id -> what was found
  for (const TornWrite& t : opt.store->recover()) {
    torn[t.id] = "an interrupted write (" + t.where + ", " + std::to_string(t.bytes) +
                 " bytes) was found at startup and discarded";
    log("torn session write: " + torn[t.id]);
  }
  for (const std::string& id : opt.store->list()) {
    std::shared_ptr<Session> s = new_session(id, false);
    s->decoder.reset();
    s->where = Session::Where::parked;
    if (auto t = torn.find(id); t != torn.end()) {
      s->recovery = t->second + "; the previous record is used";
      torn.erase(t);
    }
    try {
      const std::optional<std::vector<std::byte>> blob = opt.store->get(id);
      if (!blob) throw kvcache::FormatError("session record " + id + ": vanished while reading the store");
      s->meta = decode_record(*blob, id + " in the " + opt.store->describe()).meta;
      if (s->meta.id != id)
        throw kvcache::FormatError("session record " + id + ": holds session " + s->meta.id);
      if (s->meta.model != fingerprint)
        throw kvcache::FormatError("session record " + id + ": made with model '" + s->meta.model + "'");
      if (s->meta.history) {
        for (const std::int32_t t : *s->meta.history) {
          if (t < 0 || static_cast<std::uint32_t>(t) >= tokenizer->vocab_size())
            throw kvcache::FormatError("session record " + id + ": its history holds token " +
                                       std::to_string(t) + ", outside the vocabulary");
        }
      }
      s->stats.tokens_seen = s->meta.tokens_seen;
      s->stats.tokens_evicted = s->meta.tokens_evicted;
      s->stats.tokens_kept = s->meta.tokens_kept;
      s->stats.tokens_pinned = s->meta.tokens_pinned;
      s->stats.kv_bytes = s->meta.kv_bytes;
    } catch (const std::exception& e) {
      s->where = Session::Where::corrupt;
      s->problem = e.what();
      log("session " + id + " is corrupt and will not be loaded: " + e.what());
    }
    if (s->where == Session::Where::parked && s->meta.origin == "chat" && s->meta.history)
      prefix_index.put(id, *s->meta.history);
    sessions[id] = std::move(s);
  }
  for (const auto& [id, note] : torn) {  // a torn write and no complete record before it
    std::shared_ptr<Session> s = new_session(id, false);
    s->decoder.reset();
    s->where = Session::Where::corrupt;
    s->recovery = note;
    s->problem = "its only record was torn mid-write";
    sessions[id] = std::move(s);
  }
  // Parking and chat-session replacement go least recently used first, across restarts too.
  std::vector<Session*> by_use;
  for (const auto& [id, s] : sessions) by_use.push_back(s.get());
  std::stable_sort(by_use.begin(), by_use.end(), [](const Session* a, const Session* b) {
    return a->meta.last_used_unix < b->meta.last_used_unix;
  });
  for (Session* s : by_use) s->lru = ++tick;
  std::size_t parked = 0, corrupt = 0;
  for (const auto& [id, s] : sessions) ++(s->where == Session::Where::corrupt ? corrupt : parked);
  log("store " + opt.store->describe() + ": " + std::to_string(parked) + " sessions to resume, " +
      std::to_string(corrupt) + " corrupt");
}

}  // namespace kvserve
