#include "http_server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "kvcache/error.h"
#include "openai_objects.h"

namespace kvserve {
namespace {

using nlohmann::json;

// Debian's cpp-httplib 0.11 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into
// the shared library): a burst of more concurrent connects overflows the accept queue and clients
// see resets. listen() again on the bound socket raises the backlog (Linux updates it in place).
class WideBacklogServer : public httplib::Server {
 public:
  bool widen_backlog() { return ::listen(svr_sock_, SOMAXCONN) == 0; }
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& e, int retry_after_s) {
  res.status = e.status;
  if (e.status == 503) res.set_header("Retry-After", std::to_string(retry_after_s));
  res.set_content(error_body(e.status, e.param, e.what()), "application/json");
}

std::string answer_id(const char* prefix) {
  std::random_device rd;
  return fmt::format("{}-{:08x}{:08x}", prefix, rd(), rd());
}

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Blocks until the engine admitted or refused `job`; the refusal, if any.
std::optional<ApiError> wait_admitted(Job& job) {
  std::unique_lock lk(job.mu);
  job.cv.wait(lk, [&] { return job.phase != Job::Phase::queued; });
  return job.refused;
}

// Blocks until `job` is done; its text.
std::string wait_text(Job& job) {
  std::unique_lock lk(job.mu);
  job.cv.wait(lk, [&] { return job.phase == Job::Phase::done; });
  std::string text;
  for (const std::string& piece : job.pieces) text += piece;
  return text;
}

}  // namespace

HttpServer::HttpServer(Engine& engine, const HttpOptions& options)
    : engine_(engine), opt_(options), http_(std::make_unique<WideBacklogServer>()) {
  const int threads = std::max(options.threads, 2);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  http_->set_payload_max_length(options.max_body_bytes);
  routes();
  port_ = options.port == 0 ? http_->bind_to_any_port(options.host)
                            : (http_->bind_to_port(options.host, options.port) ? options.port : -1);
  if (port_ <= 0) throw kvcache::Error(fmt::format("cannot listen on {}:{}", options.host, options.port));
  if (!static_cast<WideBacklogServer&>(*http_).widen_backlog())
    throw kvcache::Error(fmt::format("cannot raise the listen backlog on {}:{}", options.host, port_));
}

HttpServer::~HttpServer() = default;

bool HttpServer::run() { return http_->listen_after_bind(); }

void HttpServer::stop() {
  engine_.shutdown();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (open_responses_.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

// The events of a streamed answer, as data strings: `opening` before the first token's,
// one per released piece, then `closing` (given the finished job, its lock held) and [DONE].
struct HttpServer::EventStream {
  std::function<std::vector<std::string>()> opening;
  std::function<std::string(const std::string& piece)> piece;
  std::function<std::vector<std::string>(const Job& job)> closing;
};

void HttpServer::routes() {
  httplib::Server& h = *http_;
  const int retry = opt_.retry_after_s;
  const std::size_t max_body = opt_.max_body_bytes;

  // A POST without Content-Length or chunked encoding (curl -X POST with no data) has no body, but
  // httplib 0.11 reads one until the client closes, which it never does: the client got a bare
  // 400 after the read timeout. Saying the body is empty lets every endpoint answer at once, with
  // what it is missing. (httplib's Request is not const; only this callback's view of it is.)
  h.set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
    if (req.method == "POST" && !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding"))
      const_cast<httplib::Request&>(req).set_header("Content-Length", "0");
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Bodies for the errors httplib answers itself (unknown path, oversized body, ...).
  h.set_error_handler([max_body](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string param, message = fmt::format("HTTP {} for {} {}", res.status, req.method, req.path);
    if (res.status == 413) {
      param = "body";
      message = fmt::format("the request body exceeds the {}-byte limit (--max-body-bytes)", max_body);
    } else if (res.status == 404) {
      message = "no such endpoint: " + req.method + " " + req.path;
    }
    res.set_content(error_body(res.status, param, message), "application/json");
  });
  h.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content(error_body(500, "", "internal error: " + what), "application/json");
  });

  h.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool down = engine_.shutting_down();
    res.status = down ? 503 : 200;
    res.set_content(dump({{"status", down ? "shutting_down" : "ok"}, {"model", engine_.model_name()}}),
                    "application/json");
  });
  h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(engine_.metrics_text(), "text/plain; version=0.0.4");
  });
  h.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"object", "list"}, {"data", json::array({engine_.model_card()})}}),
                    "application/json");
  });
  h.Get("/v1/models/(.+)", [this, retry](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1].str() != engine_.model_name()) {
      send_error(res,
                 ApiError(404, "model",
                          "unknown model '" + req.matches[1].str() + "': this server runs '" +
                              engine_.model_name() + "'"),
                 retry);
      return;
    }
    res.set_content(dump(engine_.model_card()), "application/json");
  });

  h.Post("/v1/sessions", [this, retry](const httplib::Request& req, httplib::Response& res) {
    try {
      // No body, an empty one or an empty object: the endpoint takes no fields.
      if (req.body.find_first_not_of(" \t\r\n") != std::string::npos) {
        const json body = parse_body_object(req.body, "no body, or an empty JSON object");
        if (!body.empty()) {
          throw ApiError(400, body.begin().key(),
                         "POST /v1/sessions takes no fields (got '" + body.begin().key() + "')");
        }
      }
      const std::string id = engine_.create_session();
      res.status = 201;
      res.set_content(dump(engine_.session_status(id)), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e, retry);
    }
  });
  h.Get("/v1/sessions", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump(engine_.list_sessions()), "application/json");
  });
  h.Get("/v1/sessions/(.+)", [this, retry](const httplib::Request& req, httplib::Response& res) {
    try {
      res.set_content(dump(engine_.session_status(req.matches[1].str())), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e, retry);
    }
  });
  h.Delete("/v1/sessions/(.+)", [this, retry](const httplib::Request& req, httplib::Response& res) {
    try {
      const std::string id = req.matches[1].str();
      engine_.delete_session(id);
      res.set_content(dump({{"id", id}, {"object", "session"}, {"deleted", true}}), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e, retry);
    }
  });

  h.Post("/v1/completions", [this, retry](const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<Job> job;
    try {
      job = engine_.submit(parse_completion_request(req.body, engine_.limits()));
    } catch (const ApiError& e) {
      send_error(res, e, retry);
      return;
    }
    if (const std::optional<ApiError> refused = wait_admitted(*job)) {
      send_error(res, *refused, retry);
      return;
    }
    const AnswerIdentity a{answer_id("cmpl"), unix_seconds(), engine_.model_name()};
    if (!job->request.stream) {
      const std::string text = wait_text(*job);
      std::lock_guard lk(job->mu);
      if (job->finish_reason == "error") {
        res.status = 500;
        res.set_content(error_body(500, "", "generation failed: " + job->error), "application/json");
        return;
      }
      json j = completion_object(a, text, job->finish_reason);
      add_outcome(j, *job);
      res.set_content(dump(j), "application/json");
      return;
    }
    stream(res, job,
           {[] { return std::vector<std::string>{}; },
            [a](const std::string& piece) { return dump(completion_object(a, piece, nullptr)); },
            [a](const Job& done) {
              json last = completion_object(a, "", done.finish_reason);
              add_outcome(last, done);
              return std::vector<std::string>{dump(last)};
            }});
  });

  h.Post("/v1/chat/completions", [this, retry](const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<Job> job;
    bool include_usage = false;
    try {
      ChatRequest r = parse_chat_request(req.body, engine_.limits());
      include_usage = r.include_usage;
      job = engine_.submit_chat(std::move(r));
    } catch (const ApiError& e) {
      send_error(res, e, retry);
      return;
    }
    if (const std::optional<ApiError> refused = wait_admitted(*job)) {
      send_error(res, *refused, retry);
      return;
    }
    const AnswerIdentity a{answer_id("chatcmpl"), unix_seconds(), engine_.model_name()};
    if (!job->request.stream) {
      const std::string text = wait_text(*job);
      std::lock_guard lk(job->mu);
      if (job->finish_reason == "error") {
        res.status = 500;
        res.set_content(error_body(500, "", "generation failed: " + job->error), "application/json");
        return;
      }
      res.set_content(dump(chat_completion(a, text, *job)), "application/json");
      return;
    }
    // With include_usage every chunk carries "usage": null and one last chunk, with no choices,
    // carries the usage (OpenAI's stream_options).
    const auto chunk = [a, include_usage](json delta, const json& finish_reason) {
      json c = chat_chunk(a, std::move(delta), finish_reason);
      if (include_usage) c["usage"] = nullptr;
      return c;
    };
    stream(res, job,
           {[chunk] {
              return std::vector<std::string>{dump(chunk({{"role", "assistant"}, {"content", ""}}, nullptr))};
            },
            [chunk](const std::string& piece) {
              return dump(chunk({{"content", piece}}, nullptr));
            },
            [a, chunk, include_usage](const Job& done) {
              json last = chunk(json::object(), done.finish_reason);
              if (!done.session_id.empty()) last["session"] = done.session_id;
              if (!done.error.empty()) last["error"] = {{"message", done.error}, {"type", "server_error"}};
              std::vector<std::string> events{dump(last)};
              if (include_usage) {
                json usage = chat_chunk(a, json::object(), nullptr);
                usage["choices"] = json::array();
                usage["usage"] = usage_object(done);
                events.push_back(dump(usage));
              }
              return events;
            }});
  });
}

void HttpServer::stream(httplib::Response& res, std::shared_ptr<Job> job, EventStream events) {
  ++open_responses_;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, events = std::move(events), opened = false](std::size_t, httplib::DataSink& sink) mutable {
        auto send = [&](const std::string& data) {
          const std::string event = "data: " + data + "\n\n";
          return sink.write(event.data(), event.size());
        };
        if (!opened) {
          opened = true;
          for (const std::string& e : events.opening()) {
            if (!send(e)) {
              job->cancelled = true;
              return false;
            }
          }
        }
        std::vector<std::string> pieces, closing;
        bool done = false;
        {
          std::unique_lock lk(job->mu);
          job->cv.wait_for(lk, std::chrono::milliseconds(200),
                           [&] { return !job->pieces.empty() || job->phase == Job::Phase::done; });
          pieces.swap(job->pieces);
          done = job->phase == Job::Phase::done;
          if (done) closing = events.closing(*job);
        }
        for (const std::string& piece : pieces) {  // one event per token, as OpenAI streams
          if (!send(events.piece(piece))) {
            job->cancelled = true;  // the client went away: the engine stops this stream
            return false;
          }
        }
        if (done) {
          for (const std::string& e : closing) {
            if (!send(e)) return false;
          }
          if (!send("[DONE]")) return false;
          sink.done();
        }
        return true;
      },
      [this, job](bool success) {
        if (!success) job->cancelled = true;
        --open_responses_;
      });
}

}  // namespace kvserve
