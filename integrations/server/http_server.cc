#include "http_server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "kvcache/error.h"

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

std::string completion_id() {
  std::random_device rd;
  return fmt::format("cmpl-{:08x}{:08x}", rd(), rd());
}

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One OpenAI text_completion object (a whole answer, or one event of a stream).
json completion_object(const std::string& id, std::int64_t created, const std::string& model,
                       const std::string& text, const json& finish_reason) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices",
           json::array(
               {{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}})}};
}

// Usage, session and error fields of a finished job (call with job.mu held).
void add_outcome(json& j, const Job& job) {
  j["usage"] = {{"prompt_tokens", job.prompt_count},
                {"completion_tokens", job.completion_count},
                {"total_tokens", job.prompt_count + job.completion_count}};
  if (!job.session_id.empty()) j["session"] = job.session_id;
  if (!job.error.empty()) j["error"] = {{"message", job.error}, {"type", "server_error"}};
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

void HttpServer::routes() {
  httplib::Server& h = *http_;
  const int retry = opt_.retry_after_s;
  const std::size_t max_body = opt_.max_body_bytes;

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
    res.set_content(
        dump(
            {{"object", "list"},
             {"data",
              json::array({{{"id", engine_.model_name()}, {"object", "model"}, {"owned_by", "kvstream"}}})}}),
        "application/json");
  });

  h.Post("/v1/sessions", [this, retry](const httplib::Request&, httplib::Response& res) {
    try {
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
    {
      std::unique_lock lk(job->mu);
      job->cv.wait(lk, [&] { return job->phase != Job::Phase::queued; });
      if (job->refused) {
        send_error(res, *job->refused, retry);
        return;
      }
    }
    const std::string id = completion_id();
    const std::int64_t created = unix_seconds();
    const std::string model = engine_.model_name();

    if (!job->request.stream) {
      std::unique_lock lk(job->mu);
      job->cv.wait(lk, [&] { return job->phase == Job::Phase::done; });
      if (job->finish_reason == "error") {
        res.status = 500;
        res.set_content(error_body(500, "", "generation failed: " + job->error), "application/json");
        return;
      }
      std::string text;
      for (const std::string& piece : job->pieces) text += piece;
      json j = completion_object(id, created, model, text, job->finish_reason);
      add_outcome(j, *job);
      res.set_content(dump(j), "application/json");
      return;
    }

    ++open_responses_;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, id, created, model](std::size_t, httplib::DataSink& sink) {
          std::vector<std::string> pieces;
          bool done = false;
          json last;
          {
            std::unique_lock lk(job->mu);
            job->cv.wait_for(lk, std::chrono::milliseconds(200),
                             [&] { return !job->pieces.empty() || job->phase == Job::Phase::done; });
            pieces.swap(job->pieces);
            done = job->phase == Job::Phase::done;
            if (done) {
              last = completion_object(id, created, model, "", job->finish_reason);
              add_outcome(last, *job);
            }
          }
          auto send = [&](const std::string& data) {
            const std::string event = "data: " + data + "\n\n";
            return sink.write(event.data(), event.size());
          };
          for (const std::string& piece : pieces) {  // one event per token, as OpenAI streams
            if (!send(dump(completion_object(id, created, model, piece, nullptr)))) {
              job->cancelled = true;  // the client went away: the engine stops this stream
              return false;
            }
          }
          if (done) {
            if (!send(dump(last)) || !send("[DONE]")) return false;
            sink.done();
          }
          return true;
        },
        [this, job](bool success) {
          if (!success) job->cancelled = true;
          --open_responses_;
        });
  });
}

}  // namespace kvserve
