#include "server.hpp"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace npc_scale::fake_gpu {

using nlohmann::json;

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

// Rounded up to the microsecond: a timer for a job's finish never fires
// before the scheduler has it done.
timeval to_timeval(double ms) {
  if (ms < 0) ms = 0;
  auto us = static_cast<int64_t>(std::ceil(ms * 1000.0));
  timeval tv;
  tv.tv_sec = static_cast<time_t>(us / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(us % 1000000);
  return tv;
}

// Milliseconds since the process started: small numbers keep the
// scheduler's sums of doubles precise (time since boot would not, after
// months of uptime).
double steady_now_ms() {
  static const auto start = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// vLLM ids are "cmpl-" + 32 hex digits; ours derive from the request id.
std::string response_id(const char* prefix, uint64_t id, uint64_t nonce) {
  uint64_t words[2] = {id, nonce};
  XXH128_hash_t h = XXH3_128bits(words, sizeof(words));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s%016llx%016llx", prefix,
                static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

void send_body(evhttp_request* req, int status, const char* content_type,
               const std::string& body, int retry_after = -1) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  if (content_type) evhttp_add_header(headers, "Content-Type", content_type);
  if (retry_after >= 0) {
    evhttp_add_header(headers, "Retry-After", std::to_string(retry_after).c_str());
  }
  evbuffer_add(evhttp_request_get_output_buffer(req), body.data(), body.size());
  evhttp_send_reply(req, status, reason_phrase(status), nullptr);
}

template <typename Json>
void send_json(evhttp_request* req, int status, const Json& j, int retry_after = -1) {
  send_body(req, status, "application/json", j.dump(), retry_after);
}

void send_error(evhttp_request* req, const ApiError& e, int retry_after = -1) {
  send_json(req, e.status, error_json(e), retry_after);
}

// FastAPI's shape for routing errors, as a real vLLM answers them.
void send_detail(evhttp_request* req, int status, const char* detail) {
  send_json(req, status, json{{"detail", detail}});
}

std::string_view body_of(evhttp_request* req) {
  evbuffer* in = evhttp_request_get_input_buffer(req);
  size_t len = evbuffer_get_length(in);
  if (len == 0) return {};
  return {reinterpret_cast<const char*>(evbuffer_pullup(in, -1)), len};
}

ApiError injected_error(int status) {
  switch (status) {
    case 429: return {429, "RateLimitError", "Injected fault: too many requests"};
    case 503: return {503, "ServiceUnavailableError", "Injected fault: service unavailable"};
    default: return {500, "InternalServerError", "Injected fault: internal server error"};
  }
}

int open_listener(const std::string& host, int port, bool reuse_port, std::string* err) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    *err = "cannot resolve " + host + ": " + gai_strerror(rc);
    return -1;
  }
  int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
  int one = 1;
  bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            (!reuse_port || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0) &&
            bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 4096) == 0 &&
            evutil_make_socket_nonblocking(fd) == 0;
  freeaddrinfo(res);
  if (!ok) {
    *err = "cannot listen on " + host + ":" + service + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

int bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return -1;
}

// vLLM's answer once its engine is dead (EngineDeadError), to every request.
ApiError engine_dead_error() {
  return ApiError{500, "InternalServerError",
                  "EngineCore encountered an issue. See stack trace (above) for the root cause."};
}

}  // namespace

// One event loop with its own evhttp and its own pending requests. Requests
// never move between workers; only the news that one finished crosses over,
// through a mutex-protected mailbox plus a wake-up pipe (no evthread needed).
// Every worker that changes the GPU's state arms its own GPU timer for the
// next finish the scheduler reports, so the last one to change it always
// has a timer at the right time; a timer that turns out early finds nothing
// due and is armed again.
class Worker {
 public:
  Worker(GpuState& gpu, int index, std::vector<std::unique_ptr<Worker>>& peers)
      : gpu_(gpu), index_(index), peers_(peers) {}
  ~Worker();

  std::optional<std::string> init(int listen_fd, bool handle_signals, int keep_alive_ms);
  void run() { event_base_dispatch(base_); }
  // Thread-safe: the request `id`, which this worker owns, has finished.
  void post_finished(uint64_t id);
  void post_stop();
  // Thread-safe: every hanging request of this worker goes into the GPU now.
  void post_release_hangs();
  // Thread-safe: the engine died; this worker's requests in it fail now.
  void post_engine_dead();

 private:
  enum class Stage { dropping, hanging, in_gpu };

  // A request whose answer is deferred. It owns its events, so freeing it
  // cancels them: no callback can ever see a dead Pending.
  struct Pending {
    Worker* worker = nullptr;
    evhttp_request* req = nullptr;
    evhttp_connection* conn = nullptr;
    event* timer = nullptr;
    event* watch = nullptr;  // detects the client hanging up meanwhile
    Stage stage = Stage::in_gpu;
    bool chat = false;
    bool malformed = false;
    bool abort = false;
    uint64_t nonce = 0;
    std::chrono::steady_clock::time_point arrived;  // for vLLM's e2e latency
    Job job;
    InferenceRequest request;
    InferenceResult result;
    ~Pending() {
      if (timer) event_free(timer);
      if (watch) event_free(watch);
    }
  };

  // Nothing may escape into libevent (the process would abort): a request
  // that throws is answered 400 (a JSON value of an unexpected type) or 500,
  // as vLLM's server answers what its handlers raise.
  static void on_request_cb(evhttp_request* req, void* arg) {
    try {
      static_cast<Worker*>(arg)->on_request(req);
    } catch (const json::exception& e) {
      send_error(req, ApiError{400, "BadRequestError", e.what()});
    } catch (const std::exception& e) {
      send_error(req, ApiError{500, "InternalServerError", e.what()});
    }
  }
  static void on_timer_cb(evutil_socket_t, short, void* arg);
  static void on_gpu_timer_cb(evutil_socket_t, short, void* arg);
  static void on_watch_cb(evutil_socket_t fd, short, void* arg);
  static void on_mail_cb(evutil_socket_t, short, void* arg);
  static void on_signal_cb(evutil_socket_t, short, void* arg);

  void on_request(evhttp_request* req);
  void handle_inference(evhttp_request* req, bool chat);
  void handle_admin_faults(evhttp_request* req, bool post);
  void handle_admin_health(evhttp_request* req, bool post);
  void handle_admin_stall(evhttp_request* req, bool post);

  std::unique_ptr<Pending> new_pending(evhttp_request* req, uint64_t id);
  Pending* hold(std::unique_ptr<Pending> p);
  std::unique_ptr<Pending> release(uint64_t id);
  void arm(Pending* p, double ms);
  void watch(Pending* p);
  void enter_gpu(std::unique_ptr<Pending> p);
  void complete(std::unique_ptr<Pending> p);
  void abort_disconnected(Pending* p);
  void drop(Pending* p);
  // Answers the finished requests (passing those of other workers on) and
  // arms the GPU timer. True if `own` was among them (and is answered).
  bool settle(const Progress& progress, uint64_t own = 0);
  void finish_owned(uint64_t id);
  void release_hangs();
  // As vLLM's server when its engine dies: every request the engine holds
  // (running or waiting) is answered 500 EngineDeadError at once.
  void fail_engine_requests();

  GpuState& gpu_;
  int index_;
  std::vector<std::unique_ptr<Worker>>& peers_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  std::vector<event*> own_events_;  // mailbox and signal events
  event* gpu_timer_ = nullptr;      // the next finish on the GPU
  int mail_fds_[2] = {-1, -1};
  std::mutex mail_mu_;
  std::vector<uint64_t> mail_;  // finished requests of this worker
  bool mail_stop_ = false;
  bool mail_release_hangs_ = false;
  bool mail_engine_dead_ = false;
  std::unordered_map<uint64_t, std::unique_ptr<Pending>> pending_;
};

Worker::~Worker() {
  // Our events first: evhttp_free below frees the connections (and any
  // request still attached to them), so nothing of ours may point there.
  pending_.clear();
  if (http_) evhttp_free(http_);
  for (event* ev : own_events_) event_free(ev);
  if (gpu_timer_) event_free(gpu_timer_);
  if (base_) event_base_free(base_);
  for (int fd : mail_fds_) {
    if (fd >= 0) close(fd);
  }
}

std::optional<std::string> Worker::init(int listen_fd, bool handle_signals, int keep_alive_ms) {
  // Precise timers (timerfd) so a 40 ms service time is 40 ms, not 40 ms
  // rounded to epoll's millisecond granularity: benchmarks subtract it.
  // The epoll changelist folds evhttp's per-request interest changes (stop
  // reading, write the reply, read again) into fewer epoll_ctl calls.
  event_config* cfg = event_config_new();
  if (cfg) {
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  }
  base_ = cfg ? event_base_new_with_config(cfg) : event_base_new();
  if (cfg) event_config_free(cfg);
  http_ = base_ ? evhttp_new(base_) : nullptr;
  if (!http_) return std::string("cannot create the event loop");
  evhttp_set_gencb(http_, &Worker::on_request_cb, this);
  evhttp_set_max_body_size(http_, 32 << 20);
  // vLLM's uvicorn closes a keep-alive connection idle for 5 s, so a client
  // reusing connections meets servers that hang up on it. evhttp's read
  // timeout does the same: reading is off while a request waits for its
  // answer (held requests are not cut), on again once it is answered.
  const timeval keep_alive{keep_alive_ms / 1000, (keep_alive_ms % 1000) * 1000};
  evhttp_set_timeout_tv(http_, &keep_alive);
  if (!evhttp_accept_socket_with_handle(http_, listen_fd)) {
    close(listen_fd);
    return std::string("cannot accept on the listening socket");
  }
  if (pipe2(mail_fds_, O_NONBLOCK | O_CLOEXEC) != 0) return std::string("pipe2 failed");
  own_events_.push_back(event_new(base_, mail_fds_[0], EV_READ | EV_PERSIST, &Worker::on_mail_cb, this));
  if (handle_signals) {
    own_events_.push_back(evsignal_new(base_, SIGINT, &Worker::on_signal_cb, this));
    own_events_.push_back(evsignal_new(base_, SIGTERM, &Worker::on_signal_cb, this));
  }
  for (event* ev : own_events_) event_add(ev, nullptr);
  gpu_timer_ = evtimer_new(base_, &Worker::on_gpu_timer_cb, this);
  if (!gpu_timer_) return std::string("cannot create a timer");
  return std::nullopt;
}

void Worker::post_finished(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mail_mu_);
    mail_.push_back(id);
  }
  char c = 'a';
  // A full pipe already guarantees a wake-up, so EAGAIN is harmless.
  [[maybe_unused]] ssize_t n = write(mail_fds_[1], &c, 1);
}

void Worker::post_stop() {
  {
    std::lock_guard<std::mutex> lock(mail_mu_);
    mail_stop_ = true;
  }
  char c = 's';
  [[maybe_unused]] ssize_t n = write(mail_fds_[1], &c, 1);
}

void Worker::post_release_hangs() {
  {
    std::lock_guard<std::mutex> lock(mail_mu_);
    mail_release_hangs_ = true;
  }
  char c = 'r';
  [[maybe_unused]] ssize_t n = write(mail_fds_[1], &c, 1);
}

void Worker::post_engine_dead() {
  {
    std::lock_guard<std::mutex> lock(mail_mu_);
    mail_engine_dead_ = true;
  }
  char c = 'd';
  [[maybe_unused]] ssize_t n = write(mail_fds_[1], &c, 1);
}

void Worker::on_mail_cb(evutil_socket_t fd, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  char buf[256];
  while (read(fd, buf, sizeof(buf)) > 0) {
  }
  std::vector<uint64_t> mail;
  bool stop, release, dead;
  {
    std::lock_guard<std::mutex> lock(self->mail_mu_);
    mail.swap(self->mail_);
    stop = self->mail_stop_;
    release = self->mail_release_hangs_;
    self->mail_release_hangs_ = false;
    dead = self->mail_engine_dead_;
    self->mail_engine_dead_ = false;
  }
  if (stop) {
    event_base_loopbreak(self->base_);
    return;
  }
  for (uint64_t id : mail) self->finish_owned(id);
  if (release) self->release_hangs();
  if (dead) self->fail_engine_requests();
}

void Worker::fail_engine_requests() {
  if (gpu_.healthy()) return;  // revived before this worker got the news
  std::vector<uint64_t> ids;
  for (auto& [id, p] : pending_) {
    if (p->stage == Stage::in_gpu) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    std::unique_ptr<Pending> p = release(id);
    if (!p) continue;  // finished by the settle of one before it
    const Progress progress = gpu_.fail(id, steady_now_ms());
    send_error(p->req, engine_dead_error());
    p.reset();
    settle(progress);
  }
}

// A hang's timer fires now instead of after hang_ms: tests hold requests
// in flight for as long as they need, then let them go.
void Worker::release_hangs() {
  for (auto& [id, p] : pending_) {
    if (p->stage == Stage::hanging) arm(p.get(), 0);
  }
}

void Worker::on_signal_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  for (auto& w : self->peers_) {
    if (w.get() != self) w->post_stop();
  }
  event_base_loopbreak(self->base_);
}

void Worker::on_request(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* raw_path = uri ? evhttp_uri_get_path(uri) : nullptr;
  std::string_view path = raw_path ? raw_path : "";
  evhttp_cmd_type method = evhttp_request_get_command(req);
  bool get = method == EVHTTP_REQ_GET;
  bool post = method == EVHTTP_REQ_POST;

  if (!gpu_.model().api_key.empty() && path.rfind("/v1/", 0) == 0) {
    // vLLM's check, and its answer: a bare string, not an error object.
    const char* auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (auth == nullptr || auth != "Bearer " + gpu_.model().api_key) {
      return send_json(req, 401, json{{"error", "Unauthorized"}});
    }
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (!post) return send_detail(req, 405, "Method Not Allowed");
    return handle_inference(req, path == "/v1/chat/completions");
  }
  if (path == "/health") {
    if (!get) return send_detail(req, 405, "Method Not Allowed");
    int status = gpu_.healthy() ? 200 : 503;
    evhttp_send_reply(req, status, reason_phrase(status), nullptr);  // empty body, as vLLM
    return;
  }
  if (path == "/v1/models") {
    if (!get) return send_detail(req, 405, "Method Not Allowed");
    return send_json(req, 200, models_response(gpu_.model(), static_cast<int64_t>(std::time(nullptr))));
  }
  if (path == "/version") {  // open, like /health: vLLM checks no API key here
    if (!get) return send_detail(req, 405, "Method Not Allowed");
    return send_json(req, 200, json{{"version", kVllmVersion}});
  }
  if (path == "/metrics") {
    if (!get) return send_detail(req, 405, "Method Not Allowed");
    return send_body(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                     render_metrics(gpu_.snapshot()));
  }
  if (path == "/admin/faults") {
    if (!get && !post) return send_detail(req, 405, "Method Not Allowed");
    return handle_admin_faults(req, post);
  }
  if (path == "/admin/health") {
    if (!get && !post) return send_detail(req, 405, "Method Not Allowed");
    return handle_admin_health(req, post);
  }
  if (path == "/admin/stall") {
    if (!get && !post) return send_detail(req, 405, "Method Not Allowed");
    return handle_admin_stall(req, post);
  }
  if (path == "/admin/release") {
    if (!post) return send_detail(req, 405, "Method Not Allowed");
    for (auto& w : peers_) {
      if (w.get() != this) w->post_release_hangs();
    }
    release_hangs();
    return send_json(req, 200, json{{"released", true}});
  }
  if (path == "/admin/reset") {
    if (!post) return send_detail(req, 405, "Method Not Allowed");
    gpu_.reset();
    return send_json(req, 200, json{{"reset", true}});
  }
  send_detail(req, 404, "Not Found");
}

void Worker::handle_admin_faults(evhttp_request* req, bool post) {
  if (post) {
    std::string_view body = body_of(req);
    json patch = json::parse(body.begin(), body.end(), nullptr, false);
    if (patch.is_discarded()) return send_error(req, bad_request("request body is not valid JSON"));
    if (auto err = gpu_.update_faults(patch)) return send_error(req, bad_request(*err));
  }
  send_json(req, 200, faults_to_json(gpu_.faults()));
}

namespace {

// The body of an admin switch, {"<name>": true|false}: its value, or none
// (then the caller answers 400).
std::optional<bool> switch_value(std::string_view body, const char* name) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.size() != 1 || !j.contains(name) || !j[name].is_boolean()) {
    return std::nullopt;
  }
  return j[name].get<bool>();
}

std::string switch_usage(const char* name) { return std::string("expected {\"") + name + "\": true|false}"; }

}  // namespace

void Worker::handle_admin_health(evhttp_request* req, bool post) {
  if (post) {
    std::optional<bool> healthy = switch_value(body_of(req), "healthy");
    if (!healthy) return send_error(req, bad_request(switch_usage("healthy")));
    const bool dies = gpu_.healthy() && !*healthy;
    gpu_.set_healthy(*healthy);
    if (dies) {
      for (auto& w : peers_) w->post_engine_dead();
    }
  }
  send_json(req, 200, json{{"healthy", gpu_.healthy()}});
}

void Worker::handle_admin_stall(evhttp_request* req, bool post) {
  if (post) {
    std::optional<bool> stalled = switch_value(body_of(req), "stalled");
    if (!stalled) return send_error(req, bad_request(switch_usage("stalled")));
    // Finishes are passed to their owners and this worker's timer is armed
    // for the next one: the other workers' timers found none while stalled.
    settle(gpu_.set_stalled(*stalled, steady_now_ms()));
  }
  send_json(req, 200, json{{"stalled", gpu_.stalled()}});
}

std::unique_ptr<Worker::Pending> Worker::new_pending(evhttp_request* req, uint64_t id) {
  auto p = std::make_unique<Pending>();
  p->worker = this;
  p->req = req;
  p->conn = evhttp_request_get_connection(req);
  p->job.id = id;
  return p;
}

Worker::Pending* Worker::hold(std::unique_ptr<Pending> p) {
  Pending* raw = p.get();
  pending_[raw->job.id] = std::move(p);
  return raw;
}

std::unique_ptr<Worker::Pending> Worker::release(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return nullptr;
  std::unique_ptr<Pending> p = std::move(it->second);
  pending_.erase(it);
  return p;
}

void Worker::arm(Pending* p, double ms) {
  if (!p->timer) p->timer = evtimer_new(base_, &Worker::on_timer_cb, p);
  timeval tv = to_timeval(ms);
  // Relative timers start from libevent's cached loop time, which can be
  // stale by the time this request is admitted: refresh it first.
  event_base_update_cache_time(base_);
  evtimer_add(p->timer, &tv);
}

void Worker::watch(Pending* p) {
  if (p->watch || !p->conn) return;
  evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(p->conn));
  if (fd < 0) return;
  // evhttp stops reading while a request is being answered, so it would not
  // notice a hang-up until it writes; we peek at the socket ourselves.
  p->watch = event_new(base_, fd, EV_READ, &Worker::on_watch_cb, p);
  event_add(p->watch, nullptr);
}

void Worker::handle_inference(evhttp_request* req, bool chat) {
  const auto arrived = std::chrono::steady_clock::now();
  Intake in = gpu_.intake(index_, chat);
  // FastAPI validates the body before vLLM's handler runs.
  if (auto e = check_content_type(evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"))) {
    gpu_.answered();
    return send_error(req, *e);
  }
  if (!gpu_.healthy()) {
    // vLLM's /health fails only once its engine is dead, and then every
    // request fails too (EngineDeadError, 500) until the server exits.
    gpu_.answered();
    send_error(req, engine_dead_error());
    return;
  }
  if (in.faults.drop) {
    gpu_.count_faults(in.faults);
    // Closing from inside evhttp's own callback would free the connection
    // under its feet: close from a zero-delay timer instead.
    Pending* p = hold(new_pending(req, in.id));
    p->stage = Stage::dropping;
    arm(p, 0);
    return;
  }
  if (in.faults.error) {
    gpu_.count_faults(in.faults);
    gpu_.answered();
    int status = in.error_status;
    send_error(req, injected_error(status), status == 500 ? -1 : in.retry_after);
    return;
  }

  ParseResult parsed = parse_inference_request(chat, body_of(req), gpu_.model());
  if (auto* e = std::get_if<ApiError>(&parsed)) {
    gpu_.answered();
    send_error(req, *e);
    return;
  }
  gpu_.count_faults(in.faults);

  auto p = new_pending(req, in.id);
  p->arrived = arrived;
  p->chat = chat;
  p->nonce = in.nonce;
  p->malformed = in.faults.malformed;
  p->abort = in.faults.abort;
  p->request = std::move(std::get<InferenceRequest>(parsed));
  if (in.ignore_structured_outputs) p->request.gen.choices.clear();
  p->result = run_inference(p->request, in.nonce);
  p->job.priority = p->request.priority;
  p->job.completion_tokens = std::max(1, p->result.max_choice_tokens);
  p->job.prefix_hit = gpu_.prefix_lookup(p->request.prompts);
  for (int t : p->request.prompt_tokens) p->job.prompt_tokens += t;
  p->job.sequences = static_cast<int>(p->request.prompts.size()) * p->request.n;
  p->job.extra_ms = in.faults.slow ? static_cast<double>(in.slow_ms) : 0.0;

  if (in.faults.hang) {
    Pending* raw = hold(std::move(p));
    raw->stage = Stage::hanging;
    arm(raw, static_cast<double>(in.hang_ms));
    watch(raw);
    return;
  }
  enter_gpu(std::move(p));
}

void Worker::enter_gpu(std::unique_ptr<Pending> p) {
  if (!gpu_.healthy()) {  // a hang that ends after the engine died
    gpu_.answered();
    send_error(p->req, engine_dead_error());
    return;
  }
  Pending* raw = hold(std::move(p));
  raw->stage = Stage::in_gpu;
  const uint64_t id = raw->job.id;
  // The instant profile finishes it right here, answered inside the request
  // callback; otherwise it waits for the GPU timer, queued or running.
  if (!settle(gpu_.submit(raw->job, steady_now_ms()), id)) watch(raw);
}

void Worker::complete(std::unique_ptr<Pending> p) {
  const double e2e_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - p->arrived).count();
  if (p->abort) {
    // What an aborted request had so far: half of each answer.
    for (Generation& g : p->result.choices) {
      g.text.resize(g.text.size() / 2);
      g.finish_reason = "abort";
      g.stop_reason.reset();
    }
  }
  gpu_.succeeded(p->result, e2e_s);
  const char* prefix = p->chat ? "chatcmpl-" : "cmpl-";
  std::string body =
      completion_response(p->request, p->result, response_id(prefix, p->job.id, p->nonce),
                          static_cast<int64_t>(std::time(nullptr)), gpu_.model().name)
          .dump();
  if (p->malformed) body.resize(body.size() / 2);  // cut mid-document: unparseable
  evhttp_request* req = p->req;
  p.reset();  // drop our events before evhttp may close the socket
  send_body(req, 200, "application/json", body);
}

void Worker::on_timer_cb(evutil_socket_t, short, void* arg) {
  auto* p = static_cast<Pending*>(arg);
  Worker* self = p->worker;
  switch (p->stage) {
    case Stage::dropping:
      self->drop(p);
      break;
    case Stage::hanging:
      self->enter_gpu(self->release(p->job.id));
      break;
    case Stage::in_gpu:
      break;  // the GPU timer ends these
  }
}

void Worker::on_gpu_timer_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->settle(self->gpu_.advance(steady_now_ms()));
}

void Worker::on_watch_cb(evutil_socket_t fd, short, void* arg) {
  auto* p = static_cast<Pending*>(arg);
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return;  // pipelined bytes, not a hang-up: stop watching
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    event_add(p->watch, nullptr);
    return;
  }
  p->worker->abort_disconnected(p);
}

void Worker::abort_disconnected(Pending* p) {
  // Like vLLM aborting a request whose client left: frees its batch slot.
  std::unique_ptr<Pending> owned = release(p->job.id);
  Progress progress = gpu_.cancel(owned->job.id, steady_now_ms());
  evhttp_connection* conn = owned->conn;
  owned.reset();
  evhttp_connection_free(conn);  // also frees the request still attached
  settle(progress);
}

void Worker::drop(Pending* p) {
  std::unique_ptr<Pending> owned = release(p->job.id);
  evhttp_connection* conn = owned->conn;
  owned.reset();
  gpu_.answered();
  evhttp_connection_free(conn);  // FIN without a response: "empty reply"
}

bool Worker::settle(const Progress& progress, uint64_t own) {
  bool own_finished = false;
  for (uint64_t id : progress.finished) {
    const int owner = owner_of(id);
    if (owner != index_) {
      peers_[static_cast<size_t>(owner)]->post_finished(id);
      continue;
    }
    own_finished = own_finished || id == own;
    finish_owned(id);
  }
  if (progress.next_finish_ms) {
    timeval tv = to_timeval(*progress.next_finish_ms - steady_now_ms());
    // Relative timers start from libevent's cached loop time, which can be
    // stale by now: refresh it first.
    event_base_update_cache_time(base_);
    evtimer_add(gpu_timer_, &tv);  // re-adding moves it
  }
  return own_finished;
}

void Worker::finish_owned(uint64_t id) {
  std::unique_ptr<Pending> p = release(id);
  if (p) complete(std::move(p));  // else its client left meanwhile
}

Server::Server(Options opts) : opts_(std::move(opts)), gpu_(opts_) {}

Server::~Server() = default;

std::optional<std::string> Server::start() {
  int threads = std::max(1, std::min(opts_.threads, 1 << kWorkerBits));
  int port = opts_.port;
  for (int i = 0; i < threads; ++i) {
    std::string err;
    int fd = open_listener(opts_.host, port, threads > 1, &err);
    if (fd < 0) return err;
    if (i == 0) port = port_ = bound_port(fd);
    workers_.push_back(std::make_unique<Worker>(gpu_, i, workers_));
    if (auto e = workers_.back()->init(fd, i == 0, opts_.keep_alive_ms)) return e;
  }
  return std::nullopt;
}

void Server::run() {
  std::vector<std::thread> threads;
  for (size_t i = 1; i < workers_.size(); ++i) {
    threads.emplace_back([w = workers_[i].get()] { w->run(); });
  }
  workers_[0]->run();
  for (size_t i = 1; i < workers_.size(); ++i) workers_[i]->post_stop();
  for (auto& t : threads) t.join();
}

}  // namespace npc_scale::fake_gpu
