#include "server_fixture.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <functional>
#include <random>

#include "directory_store.h"
#include "llama/model.h"
#include "llama/sampler.h"

namespace kvserve::test {

namespace fs = std::filesystem;
using kvcache::llama::Checkpoint;
using kvcache::llama::Tokenizer;

std::shared_ptr<const kvcache::llama::ModelWeights> test_model() {
  static const auto m = kvcache::llama::checkpoint_weights(
      Checkpoint::load(fs::path(KVCACHE_SHARED_DIR) / "models" / "stories260K.bin"));
  return m;
}

std::shared_ptr<const Tokenizer> test_tokenizer() {
  static const auto t = std::make_shared<const Tokenizer>(
      Tokenizer::load(fs::path(KVCACHE_SHARED_DIR) / "models" / "tok512.bin", 512));
  return t;
}

kvcache::llama::CacheOptions test_cache(std::uint32_t budget) {
  kvcache::llama::CacheOptions c;
  c.policy = kvcache::PolicyConfig::streaming(4, budget);
  c.page_tokens = 16;
  return c;
}

namespace {
// Parking fsyncs every record; on a disk that costs milliseconds each, and the concurrency test
// parks hundreds of times. /dev/shm (tmpfs) keeps the tests fast where it exists.
fs::path temp_base() {
  std::error_code ec;
  if (fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return fs::temp_directory_path();
}
}  // namespace

TempDir::TempDir() : path(temp_base() / ("kvserve_test_" + std::to_string(std::random_device{}()))) {
  fs::create_directories(path);
}
TempDir::~TempDir() { fs::remove_all(path); }

TestServer::TestServer(const fs::path& state_dir, double pool_mib, kvcache::llama::CacheOptions cache,
                       std::size_t max_body, std::shared_ptr<SessionStore> store, std::size_t max_sessions) {
  EngineOptions o;
  o.cache = std::move(cache);
  o.pool_bytes = static_cast<std::size_t>(pool_mib * 1024 * 1024);
  o.store = store ? std::move(store) : std::make_shared<DirectoryStore>(state_dir);
  o.scratch_dir = state_dir;
  o.limits.max_tokens = 512;
  o.max_sessions = max_sessions;
  o.model_name = "stories260K";
  o.log = [this](const std::string& line) { log_.push_back(line); };
  engine_ = std::make_unique<Engine>(test_model(), test_tokenizer(), std::move(o));
  HttpOptions h;
  h.host = "127.0.0.1";
  h.port = 0;
  h.max_body_bytes = max_body;
  h.threads = 80;
  http_ = std::make_unique<HttpServer>(*engine_, h);
  thread_ = std::thread([this] { http_->run(); });
}

TestServer::~TestServer() { stop(); }

void TestServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  http_->stop();
  thread_.join();
}

httplib::Client TestServer::client() const {
  httplib::Client c("127.0.0.1", http_->port());
  c.set_read_timeout(60, 0);
  return c;
}

namespace {
// No REQUIRE here: clients run on threads, where a failed REQUIRE aborts the whole run.
Answer answer_of(const httplib::Result& r) {
  Answer a;
  if (!r) {
    a.status = -1;
    a.raw = "no HTTP answer: " + httplib::to_string(r.error());
    return a;
  }
  a.status = r->status;
  a.raw = r->body;
  a.body = nlohmann::json::parse(r->body, nullptr, false);
  return a;
}
}  // namespace

Answer post_raw(httplib::Client& c, const std::string& path, const std::string& body) {
  Answer a = answer_of(c.Post(path.c_str(), body, "application/json"));
  if (a.status < 0) a.raw += " (POST " + path + " " + body + ")";
  return a;
}
Answer post(httplib::Client& c, const std::string& path, const nlohmann::json& body) {
  return post_raw(c, path, body.dump());
}
Answer get(httplib::Client& c, const std::string& path) { return answer_of(c.Get(path.c_str())); }

namespace {
// Calls `on_event` with the data of every server-sent event of a POST of `body` to `path`.
int post_events(httplib::Client& c, const std::string& path, const nlohmann::json& body,
                const std::function<void(const std::string&)>& on_event) {
  int status = 0;
  std::string buffer;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.response_handler = [&](const httplib::Response& r) {
    status = r.status;
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    buffer.append(data, n);
    for (std::size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      REQUIRE(event.rfind("data: ", 0) == 0);
      on_event(event.substr(6));
    }
    return true;
  };
  const auto r = c.send(req);
  if (status == 0 && r) status = r->status;
  return status;
}
}  // namespace

ChatStreamed post_chat_stream(httplib::Client& c, nlohmann::json body) {
  body["stream"] = true;
  ChatStreamed s;
  s.status = post_events(c, "/v1/chat/completions", body, [&](const std::string& data) {
    if (data == "[DONE]") {
      s.done = true;
      return;
    }
    s.events.push_back(nlohmann::json::parse(data));
    const nlohmann::json& e = s.events.back();
    if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
      s.content += e["choices"][0]["delta"]["content"].get<std::string>();
  });
  return s;
}

std::string raw_http(int port, const std::string& request, int timeout_s) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size()));
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return answer;
}

Streamed post_stream(httplib::Client& c, nlohmann::json body) {
  body["stream"] = true;
  Streamed s;
  s.status = post_events(c, "/v1/completions", body, [&](const std::string& data) {
    ++s.events;
    if (data == "[DONE]") {
      s.done = true;
      return;
    }
    s.last = nlohmann::json::parse(data);
    s.text += s.last["choices"][0]["text"].get<std::string>();
  });
  return s;
}

struct Oracle::Impl {
  kvcache::llama::Decoder decoder;
  kvcache::llama::Sampler sampler;
  std::int32_t pending = -1;
};

Oracle::Oracle(kvcache::llama::CacheOptions cache, float temperature, float top_p, std::uint64_t seed)
    : impl_(std::make_unique<Impl>(kvcache::llama::Decoder(test_model(), cache),
                                   kvcache::llama::Sampler({temperature, top_p, seed}))) {}
Oracle::~Oracle() = default;

std::string Oracle::turn(const std::string& prompt, std::uint32_t n) {
  const Tokenizer& tok = *test_tokenizer();
  std::vector<std::int32_t> input =
      impl_->pending < 0 ? tok.encode(prompt, true, false, false) : tok.encode(prompt, false, false, false);
  if (impl_->pending >= 0) input.insert(input.begin(), impl_->pending);
  std::span<const float> logits = impl_->decoder.prefill(input);
  std::int32_t prev = input.back();
  std::string text;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::int32_t next = impl_->sampler.sample(logits);
    text += next == Tokenizer::kBos || next == Tokenizer::kEos ? std::string("\n\n")
                                                               : std::string(tok.decode(prev, next));
    prev = next;
    impl_->pending = next;
    if (i + 1 < n) logits = impl_->decoder.step(next);
  }
  return text;
}

}  // namespace kvserve::test
