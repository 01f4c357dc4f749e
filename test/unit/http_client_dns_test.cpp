// Host lookups that never answer must not hold up the client's event loop:
// libcurl resolves names on a thread, and a transfer that times out or is
// cancelled while its lookup runs must not wait for that thread (an endpoint
// whose DNS server is gone would stall every other endpoint for the resolver's
// whole timeout). getaddrinfo is interposed here for one made-up host name,
// whose lookups block until the test lets them go.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/http_client.hpp"

namespace {

constexpr const char* kStuckHost = "stuck-dns.invalid";

struct StuckLookups {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int inside = 0;
};
StuckLookups stuck;

}  // namespace

// Seen by libcurl's resolver threads: the made-up host blocks until the gate
// opens, every other name goes to the C library.
extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res) {
  using Real = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "getaddrinfo"));
  if (node == nullptr || std::strcmp(node, kStuckHost) != 0) return real(node, service, hints, res);
  std::unique_lock<std::mutex> lock(stuck.mu);
  stuck.inside++;
  stuck.cv.notify_all();
  stuck.cv.wait(lock, [] { return stuck.open; });
  stuck.inside--;
  stuck.cv.notify_all();
  return EAI_NONAME;
}

namespace {

using npc_scale::HttpClient;
using npc_scale::HttpRequest;
using npc_scale::HttpResult;

// Holds the gate shut for one test; opens it (after at most 20 s, so a client
// that does block is reported rather than hanging the run) and waits for the
// resolver threads to leave.
class StuckDns {
 public:
  StuckDns() {
    std::lock_guard<std::mutex> lock(stuck.mu);
    stuck.open = false;
    watchdog_ = std::thread([this] {
      std::unique_lock<std::mutex> l(stuck.mu);
      if (!stuck.cv.wait_for(l, std::chrono::seconds(20), [this] { return done_; })) opened_by_watchdog_ = true;
      stuck.open = true;
      stuck.cv.notify_all();
    });
  }
  ~StuckDns() {
    {
      std::lock_guard<std::mutex> lock(stuck.mu);
      done_ = true;
      stuck.cv.notify_all();
    }
    watchdog_.join();
    std::unique_lock<std::mutex> l(stuck.mu);
    stuck.cv.wait_for(l, std::chrono::seconds(20), [] { return stuck.inside == 0; });
  }
  bool wait_for_lookup() {
    std::unique_lock<std::mutex> l(stuck.mu);
    return stuck.cv.wait_for(l, std::chrono::seconds(10), [] { return stuck.inside > 0; });
  }
  // True while the lookup is still held and the watchdog has not stepped in.
  bool still_stuck() {
    std::lock_guard<std::mutex> lock(stuck.mu);
    return !stuck.open && !opened_by_watchdog_ && stuck.inside > 0;
  }

 private:
  std::thread watchdog_;
  bool done_ = false;
  bool opened_by_watchdog_ = false;  // under stuck.mu
};

HttpRequest to_stuck_host(uint64_t tag, long timeout_ms) {
  HttpRequest r;
  r.tag = tag;
  r.url = std::string("http://") + kStuckHost + ":8000/metrics";
  r.timeout_ms = timeout_ms;
  return r;
}

// A client with one request out whose host's lookup is held.
class HttpClientDns : public ::testing::Test {
 protected:
  void start_stuck(uint64_t tag, long timeout_ms) {
    http.start(to_stuck_host(tag, timeout_ms));
    http.perform();
    ASSERT_TRUE(dns.wait_for_lookup());
  }
  StuckDns dns;  // destroyed after the client: it lets the lookups go
  HttpClient http;
};

}  // namespace

TEST_F(HttpClientDns, ATimeoutDuringAStuckLookupIsReportedWhileTheLookupIsStillStuck) {
  ASSERT_NO_FATAL_FAILURE(start_stuck(1, 100));
  std::vector<HttpResult> results;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (results.empty() && std::chrono::steady_clock::now() < end) {
    long wait = http.next_timeout_ms();
    if (wait < 0 || wait > 50) wait = 50;
    epoll_event ev;
    epoll_wait(http.epoll_fd(), &ev, 1, static_cast<int>(wait));
    http.perform();
    results = http.take_finished();
  }
  // Reported while the lookup is held: perform() did not wait for it.
  EXPECT_TRUE(dns.still_stuck()) << "the client waited for the stuck lookup";
  ASSERT_EQ(results.size(), 1u);
  EXPECT_FALSE(results[0].transport_ok);
  EXPECT_TRUE(results[0].timed_out) << results[0].error;
  EXPECT_FALSE(results[0].request_sent) << "timed out in the name lookup: nothing was sent";
}

TEST_F(HttpClientDns, ACancelDuringAStuckLookupReturnsWhileTheLookupIsStillStuck) {
  ASSERT_NO_FATAL_FAILURE(start_stuck(2, 60000));
  EXPECT_TRUE(http.cancel(2));
  EXPECT_TRUE(dns.still_stuck()) << "cancel() waited for the stuck lookup";
  EXPECT_EQ(http.in_flight(), 0u);
}
