// A non-blocking HTTP client on libcurl's multi *socket* API, driven by an
// epoll descriptor that the owner waits on (the dispatcher puts it in its
// latch wait). Many requests are in flight at once; each finishes on its own —
// a slow endpoint never holds up the others (pg_net's batch-waits-for-slowest
// problem). Connections are kept alive and reused per host by the multi handle.
// No Postgres here: the dispatcher owns one of these in its main thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

typedef void CURLM;
typedef void CURL;
struct curl_slist;

namespace npc_scale {

struct HttpRequest {
  uint64_t tag = 0;        // the caller's handle for this request; unique while in flight
  std::string url;
  std::string body;        // POSTed as application/json; empty → GET
  std::string bearer_token;  // Authorization: Bearer …, when non-empty
  long timeout_ms = 30000;
  // A reply body longer than this is aborted and reported as a transport
  // error: a faulty endpoint must not grow the caller's memory without bound.
  size_t max_response_bytes = 1 << 20;
};

struct HttpResult {
  uint64_t tag = 0;
  bool transport_ok = false;  // an HTTP status was received
  long status = 0;
  std::string body;
  std::string error;          // libcurl's reason when !transport_ok
  bool timed_out = false;     // !transport_ok because its timeout passed
  // The request was written to a connection: a timeout after that is the
  // wait for the answer; one before it (connecting, a name lookup) is not.
  bool request_sent = false;
  std::optional<int64_t> retry_after_s;
  double elapsed_ms = 0;
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Wait for this to be readable (or for next_timeout_ms) before perform().
  int epoll_fd() const { return epoll_fd_; }

  // Starts a request; it progresses during perform().
  void start(HttpRequest request);
  // Aborts a request in flight (no result is reported for it).
  bool cancel(uint64_t tag);

  // Drives every transfer that can progress now, without blocking.
  void perform();
  // Milliseconds until libcurl needs perform() even without socket activity;
  // -1 when it has no timer.
  long next_timeout_ms() const;

  // Results of the requests finished since the last call.
  std::vector<HttpResult> take_finished();
  // Whether take_finished() has something: any perform() may finish
  // transfers, and their sockets will not signal again.
  bool has_finished() const { return !finished_.empty(); }
  size_t in_flight() const { return transfers_.size(); }
  // Drops the header lists of bearer tokens no longer configured (`keep`)
  // and used by no request in flight: a rotated api_key is not kept for
  // the dispatcher's life.
  void forget_tokens_except(const std::set<std::string>& keep);
  size_t tokens_held() const { return header_lists_.size(); }

  struct Transfer;  // one request in flight (public only for libcurl's write callback)

 private:
  static int on_socket(CURL* easy, int fd, int what, void* client, void* socket_data);
  static int on_timer(CURLM* multi, long timeout_ms, void* client);
  void collect_finished();
  CURL* take_handle();
  void give_back(CURL* easy);
  curl_slist* headers_for(const std::string& bearer_token);

  CURLM* multi_ = nullptr;
  // Easy handles of finished transfers, reset and reused: creating one per
  // request is a few kB of allocation and set-up on the hot path.
  std::vector<CURL*> idle_handles_;
  // Header lists by bearer token ("" = none): one per endpoint credential.
  std::map<std::string, curl_slist*> header_lists_;
  int epoll_fd_ = -1;
  int64_t timer_deadline_us_ = -1;  // monotonic; -1 = none
  std::map<uint64_t, std::unique_ptr<Transfer>> transfers_;
  std::vector<HttpResult> finished_;
};

}  // namespace npc_scale
