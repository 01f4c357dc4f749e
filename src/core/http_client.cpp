#include "http_client.hpp"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>

namespace npc_scale {

namespace {

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// libcurl may start a thread while driving transfers (its threaded DNS
// resolver), and a thread inherits its creator's signal mask. With every
// signal blocked meanwhile, the host process's handlers (Postgres's assume
// the main thread) never run on such a thread; a signal that came in the
// meantime is delivered here once the mask is restored.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~SignalsBlocked() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace

// At most this many idle easy handles are kept for reuse.
constexpr size_t kMaxIdleHandles = 256;

struct HttpClient::Transfer {
  HttpRequest request;
  CURL* easy = nullptr;  // owned by the HttpClient's handle pool
  std::string response;
  bool too_large = false;  // aborted at request.max_response_bytes
  int64_t started_us = 0;
};

namespace {

size_t append_body(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<HttpClient::Transfer*>(user);
  const size_t n = size * nmemb;
  if (t->response.size() + n > t->request.max_response_bytes) {
    t->too_large = true;
    return 0;  // libcurl aborts the transfer (CURLE_WRITE_ERROR)
  }
  try {
    t->response.append(data, n);
  } catch (...) {  // nothing may unwind through libcurl's C frames
    return 0;      // aborts the transfer (CURLE_WRITE_ERROR)
  }
  return n;
}

// libcurl must be initialised once per process before any thread exists.
struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

}  // namespace

HttpClient::HttpClient() {
  static CurlGlobal global;
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::runtime_error("epoll_create1 failed");
  multi_ = curl_multi_init();
  if (!multi_) {
    close(epoll_fd_);
    throw std::runtime_error("curl_multi_init failed");
  }
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &HttpClient::on_timer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  // Keep enough idle connections for a large fleet (default is 4 × handles).
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, 1024L);
}

HttpClient::~HttpClient() {
  for (auto& [tag, t] : transfers_) {
    curl_multi_remove_handle(multi_, t->easy);
    curl_easy_cleanup(t->easy);
  }
  transfers_.clear();
  for (CURL* e : idle_handles_) curl_easy_cleanup(e);
  curl_multi_cleanup(multi_);
  for (auto& [token, list] : header_lists_) curl_slist_free_all(list);
  close(epoll_fd_);
}

CURL* HttpClient::take_handle() {
  if (idle_handles_.empty()) {
    CURL* e = curl_easy_init();
    if (!e) throw std::runtime_error("curl_easy_init failed");
    return e;
  }
  CURL* e = idle_handles_.back();
  idle_handles_.pop_back();
  return e;
}

void HttpClient::give_back(CURL* easy) {
  if (idle_handles_.size() >= kMaxIdleHandles) {
    curl_easy_cleanup(easy);
    return;
  }
  curl_easy_reset(easy);  // options only: connections stay in the multi's cache
  idle_handles_.push_back(easy);
}

curl_slist* HttpClient::headers_for(const std::string& bearer_token) {
  auto it = header_lists_.find(bearer_token);
  if (it != header_lists_.end()) return it->second;
  std::vector<std::string> lines = {"Content-Type: application/json",
                                    "Expect:"};  // no 100-continue round trip
  if (!bearer_token.empty()) lines.push_back("Authorization: Bearer " + bearer_token);
  curl_slist* list = nullptr;
  for (const std::string& line : lines) {
    curl_slist* longer = curl_slist_append(list, line.c_str());
    if (!longer) {
      curl_slist_free_all(list);
      throw std::runtime_error("curl_slist_append failed");
    }
    list = longer;
  }
  header_lists_.emplace(bearer_token, list);
  return list;
}

void HttpClient::forget_tokens_except(const std::set<std::string>& keep) {
  std::set<std::string> in_use;
  for (const auto& [tag, t] : transfers_) in_use.insert(t->request.bearer_token);
  for (auto it = header_lists_.begin(); it != header_lists_.end();) {
    if (keep.count(it->first) || in_use.count(it->first)) {
      ++it;
      continue;
    }
    curl_slist_free_all(it->second);  // idle handles were reset: none points at it
    it = header_lists_.erase(it);
  }
}

// libcurl keeps a per-socket pointer for us (curl_multi_assign), forgotten
// at CURL_POLL_REMOVE: set once the socket is in the epoll set, so a new
// socket is ADDed and a known one MODified, without a failing call first.
int HttpClient::on_socket(CURL*, int fd, int what, void* client, void* socket_data) {
  auto* self = static_cast<HttpClient*>(client);
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(self->epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    return 0;
  }
  epoll_event ev{};
  ev.data.fd = fd;
  if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
  const bool registered = socket_data != nullptr;
  int op = registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(self->epoll_fd_, op, fd, &ev) != 0) {
    // Out of step with the kernel (e.g. the descriptor was reused): the other verb.
    epoll_ctl(self->epoll_fd_, op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
  }
  if (!registered) curl_multi_assign(self->multi_, fd, self);  // any non-null mark
  return 0;
}

int HttpClient::on_timer(CURLM*, long timeout_ms, void* client) {
  auto* self = static_cast<HttpClient*>(client);
  self->timer_deadline_us_ = timeout_ms < 0 ? -1 : now_us() + timeout_ms * 1000;
  return 0;
}

void HttpClient::start(HttpRequest request) {
  auto t = std::make_unique<Transfer>();
  t->request = std::move(request);
  uint64_t tag = t->request.tag;
  if (transfers_.count(tag)) throw std::logic_error("HttpClient: duplicate request tag");
  curl_slist* headers = headers_for(t->request.bearer_token);
  t->easy = take_handle();
  CURL* e = t->easy;
  curl_easy_setopt(e, CURLOPT_URL, t->request.url.c_str());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);  // never touch the process's signals
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->request.timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, std::min(t->request.timeout_ms, 5000L));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &append_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  // A transfer that times out or is cancelled while its host name is still
  // being resolved would wait for the resolver thread (glibc's timeout, many
  // seconds) and stall every other endpoint: leave the thread to finish alone.
  curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
  // The fleet is reached directly: a proxy named in the server's environment
  // (http_proxy, ALL_PROXY) would see every prompt and api_key.
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_PRIVATE, reinterpret_cast<void*>(t->request.tag));
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  if (!t->request.body.empty()) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(t->request.body.size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->request.body.data());
  }
  t->started_us = now_us();
  // Held before libcurl sees the handle, whose options point into it.
  auto it = transfers_.emplace(tag, std::move(t)).first;
  CURLMcode added;
  {
    SignalsBlocked blocked;
    added = curl_multi_add_handle(multi_, e);
  }
  if (added != CURLM_OK) {
    transfers_.erase(it);
    give_back(e);
    throw std::runtime_error("curl_multi_add_handle failed");
  }
}

bool HttpClient::cancel(uint64_t tag) {
  auto it = transfers_.find(tag);
  if (it == transfers_.end()) return false;
  curl_multi_remove_handle(multi_, it->second->easy);
  give_back(it->second->easy);
  transfers_.erase(it);
  return true;
}

long HttpClient::next_timeout_ms() const {
  if (timer_deadline_us_ < 0) return -1;
  int64_t left = timer_deadline_us_ - now_us();
  return left <= 0 ? 0 : static_cast<long>((left + 999) / 1000);
}

void HttpClient::perform() {
  SignalsBlocked blocked;
  int running = 0;
  epoll_event events[64];
  for (;;) {
    int n = epoll_wait(epoll_fd_, events, 64, 0);
    if (n <= 0) break;
    for (int i = 0; i < n; i++) {
      int flags = 0;
      if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(multi_, events[i].data.fd, flags, &running);
    }
    if (n < 64) break;
  }
  if (timer_deadline_us_ >= 0 && now_us() >= timer_deadline_us_) {
    timer_deadline_us_ = -1;
    curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  collect_finished();
}

void HttpClient::collect_finished() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    void* priv = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    uint64_t tag = reinterpret_cast<uint64_t>(priv);
    auto it = transfers_.find(tag);
    if (it == transfers_.end()) continue;
    Transfer& t = *it->second;
    HttpResult r;
    r.tag = tag;
    r.elapsed_ms = (now_us() - t.started_us) / 1000.0;
    if (msg->data.result == CURLE_OK) {
      r.transport_ok = true;
      curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &r.status);
      r.body = std::move(t.response);
      curl_header* h = nullptr;
      if (curl_easy_header(t.easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h) {
        // Seconds or an HTTP-date, as libcurl reads it (a date past is 0).
        curl_off_t s = 0;
        if (curl_easy_getinfo(t.easy, CURLINFO_RETRY_AFTER, &s) == CURLE_OK && s >= 0) r.retry_after_s = s;
      }
    } else if (t.too_large) {
      r.error = "reply larger than " + std::to_string(t.request.max_response_bytes) + " bytes: aborted";
    } else {
      r.error = curl_easy_strerror(msg->data.result);
      r.timed_out = msg->data.result == CURLE_OPERATION_TIMEDOUT;
    }
    long request_bytes = 0;
    r.request_sent = r.transport_ok || (curl_easy_getinfo(t.easy, CURLINFO_REQUEST_SIZE, &request_bytes) == CURLE_OK &&
                                        request_bytes > 0);
    curl_multi_remove_handle(multi_, t.easy);
    give_back(t.easy);
    transfers_.erase(it);
    finished_.push_back(std::move(r));
  }
}

std::vector<HttpResult> HttpClient::take_finished() {
  std::vector<HttpResult> out;
  out.swap(finished_);
  return out;
}

}  // namespace npc_scale
