// L2 against a real redis-server started for the test on a free loopback
// port: hits, misses, TTL, prefix isolation, and Redis going away and coming
// back (a miss, never an exception; one state change each way).
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "redis_cache.hpp"

using namespace npc_scale;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A listening socket on a free loopback port (*port).
int loopback_listener(int backlog, int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  listen(fd, backlog);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int free_port() {
  int port = 0;
  close(loopback_listener(1, &port));
  return port;
}

class RedisServer {
 public:
  explicit RedisServer(int port, std::string password = "", std::vector<std::string> extra = {})
      : port_(port), password_(std::move(password)), extra_(std::move(extra)) {
    start();
  }
  ~RedisServer() { stop(); }
  void start() {
    pid_ = fork();
    if (pid_ == 0) {
      if (!freopen("/dev/null", "w", stdout)) _exit(126);
      if (!freopen("/dev/null", "w", stderr)) _exit(126);
      std::string p = std::to_string(port_);
      std::vector<const char*> argv = {"redis-server", "--port", p.c_str(), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--loglevel", "warning"};
      if (!password_.empty()) {
        argv.push_back("--requirepass");
        argv.push_back(password_.c_str());
      }
      for (const std::string& a : extra_) argv.push_back(a.c_str());
      argv.push_back(nullptr);
      execvp("redis-server", const_cast<char* const*>(argv.data()));
      _exit(127);
    }
    // Wait (with a deadline) until it answers.
    RedisCache probe;
    RedisConfig c;
    c.port = port_;
    c.password = password_;
    probe.configure(c);
    std::string v;
    for (int i = 0; i < 500; i++) {
      if (probe.get("probe", &v, now_ms() + i * 10000) != RedisCache::Result::unavailable) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "redis-server did not start";
  }
  // SIGSTOP: the kernel still completes TCP connects, nothing is answered.
  void freeze() { kill(pid_, SIGSTOP); }
  void thaw() { kill(pid_, SIGCONT); }
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  int port_;
  std::string password_;
  std::vector<std::string> extra_;  // more redis-server arguments
  pid_t pid_ = -1;
};

}  // namespace

void pause_redis(int port, int ms);  // CLIENT PAUSE ALL, below

// A fresh redis-server on a free port, and a client configured for it.
class RedisCacheLive : public ::testing::Test {
 protected:
  RedisCacheLive() {
    RedisConfig c;
    c.port = port;
    cache.configure(c);
  }
  // For tests of what Redis answers, not of its timeouts: the fixture's
  // 20 ms command timeout would make a busy machine's late reply a miss.
  void patient() {
    RedisConfig c;
    c.port = port;
    c.command_timeout_ms = 5000;
    c.connect_timeout_ms = 1000;
    cache.configure(c);
  }
  // For tests of the 20 ms timeout itself: the first connection, waited
  // for (a busy machine's late first reply is tried again, not a failure).
  void connect_now() {
    std::string v;
    const int64_t deadline = now_ms() + 5000;
    while (cache.get("k0", &v, now_ms()) != RedisCache::Result::miss) {
      ASSERT_LT(now_ms(), deadline) << "never connected";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // What Redis holds, read by a second, patient client: checks after a
  // test's pause or freeze, without the 20 ms timeout under test.
  RedisCache::Result read_back(const std::string& key, std::string* v) {
    RedisCache other;
    RedisConfig c;
    c.port = port;
    c.command_timeout_ms = 5000;
    c.connect_timeout_ms = 1000;
    other.configure(c);
    return other.get(key, v, now_ms());
  }
  // Connected, with a command timeout (5 s) longer than the pause of Redis
  // (ms) that follows: replies are late, not missing.
  void connected_then_paused(int ms) {
    RedisConfig c;
    c.port = port;
    c.command_timeout_ms = 5000;
    cache.configure(c);
    std::string v;
    ASSERT_EQ(cache.get("k0", &v, now_ms()), RedisCache::Result::miss);
    pause_redis(port, ms);
  }
  // Writes k = v once a background connect is through, trying every 1 ms
  // for up to within_ms (a wait for a condition); `while_waiting` runs after
  // each try that found it not through yet. False if it never was.
  bool set_once_connected(int64_t within_ms, const std::function<void()>& while_waiting = {}) {
    const int64_t deadline = now_ms() + within_ms;
    while (!cache.set_nowait("k", "v", 60, now_ms())) {
      if (now_ms() >= deadline) return false;
      if (while_waiting) while_waiting();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  int port = free_port();
  std::unique_ptr<RedisServer> server = std::make_unique<RedisServer>(port);
  RedisCache cache;
};

TEST_F(RedisCacheLive, SetGetMissDeleteAndTtl) {
  patient();
  std::string v;
  EXPECT_EQ(cache.get("k1", &v, now_ms()), RedisCache::Result::miss);
  ASSERT_TRUE(cache.set("k1", "village: build a granary", 60, now_ms()));
  EXPECT_EQ(cache.get("k1", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "village: build a granary");
  std::string binary("a\0b", 3);
  ASSERT_TRUE(cache.set("bin", binary, 60, now_ms()));
  ASSERT_EQ(cache.get("bin", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, binary);
  EXPECT_EQ(cache.del("k1", now_ms()), std::optional<bool>(true));
  EXPECT_EQ(cache.get("k1", &v, now_ms()), RedisCache::Result::miss);
  ASSERT_TRUE(cache.set("short", "x", 1, now_ms()));
  // Expiry is Redis's own clock: wait for the condition, bounded.
  bool expired = false;
  for (int i = 0; i < 300 && !expired; i++) {
    expired = cache.get("short", &v, now_ms()) == RedisCache::Result::miss;
    if (!expired) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(expired) << "EX 1 expired within 3 s";
}

// A hit tells how long the key has left, so L1 never keeps it longer: a key
// read right up to its expiry never reports "no expiry" (-1) or 0.
TEST_F(RedisCacheLive, HitsReportTheTimeLeftUpToExpiry) {
  patient();
  std::string v;
  int64_t ttl = 0;
  ASSERT_TRUE(cache.set("forever", "x", 0, now_ms()));
  ASSERT_EQ(cache.get("forever", &v, now_ms(), &ttl), RedisCache::Result::hit);
  EXPECT_EQ(ttl, -1);
  for (int round = 0; round < 3; round++) {
    // EX 2: a first read stalled past a whole second still finds it.
    ASSERT_TRUE(cache.set("edge", "y", 2, now_ms()));
    int hits = 0;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < end) {
      ttl = 0;
      RedisCache::Result r = cache.get("edge", &v, now_ms(), &ttl);
      if (r == RedisCache::Result::miss) break;
      ASSERT_EQ(r, RedisCache::Result::hit);
      ASSERT_GT(ttl, 0) << "after " << hits << " hits";
      ASSERT_LE(ttl, 2000);
      hits++;
    }
    EXPECT_GT(hits, 0);
    EXPECT_EQ(cache.get("edge", &v, now_ms()), RedisCache::Result::miss) << "EX 2 expired within 5 s";
  }
}

TEST(RedisCacheTest, PrefixIsolationAndClear) {
  int port = free_port();
  RedisServer server(port);
  RedisCache a, b;
  RedisConfig ca, cb;
  ca.port = cb.port = port;
  ca.prefix = "game1:";
  cb.prefix = "game2:";
  ca.command_timeout_ms = cb.command_timeout_ms = 5000;  // a late reply on a busy machine is no miss here
  a.configure(ca);
  b.configure(cb);
  for (int i = 0; i < 1200; i++) ASSERT_TRUE(a.set("k" + std::to_string(i), "v", 60, now_ms()));
  ASSERT_TRUE(b.set("k1", "other", 60, now_ms()));
  EXPECT_EQ(a.clear(now_ms()), 1200);
  std::string v;
  EXPECT_EQ(a.get("k1", &v, now_ms()), RedisCache::Result::miss);
  EXPECT_EQ(b.get("k1", &v, now_ms()), RedisCache::Result::hit) << "another prefix is untouched";
  // A prefix with glob characters is matched literally: "game[2]:" as a
  // pattern would also match "game2:".
  RedisCache g;
  RedisConfig cg = cb;
  cg.prefix = "game[2]:";
  g.configure(cg);
  ASSERT_TRUE(g.set("k1", "globby", 60, now_ms()));
  EXPECT_EQ(g.clear(now_ms()), 1);
  EXPECT_EQ(b.get("k1", &v, now_ms()), RedisCache::Result::hit) << "game2:k1 survives clearing game[2]:";
  EXPECT_EQ(g.get("k1", &v, now_ms()), RedisCache::Result::miss);
}

TEST_F(RedisCacheLive, DownIsAMissThenComesBackWithOneStateChangeEachWay) {
  std::vector<bool> changes;
  patient();
  cache.on_state_change = [&](bool up, const std::string&) { changes.push_back(up); };
  ASSERT_TRUE(cache.set("k", "v", 60, now_ms()));
  server->stop();
  std::string v;
  int64_t t = now_ms();
  for (int i = 0; i < 50; i++) {
    EXPECT_EQ(cache.get("k", &v, t + i), RedisCache::Result::unavailable);
  }
  EXPECT_FALSE(cache.up());
  EXPECT_EQ(changes, std::vector<bool>{false}) << "one 'down' report for 50 failed lookups";
  uint64_t errors_while_backing_off = cache.errors();
  EXPECT_LE(errors_while_backing_off, 2u) << "back-off: no reconnect attempt per request";
  server->start();
  // After the back-off the next lookup reconnects.
  EXPECT_EQ(cache.get("k", &v, t + 60000), RedisCache::Result::miss) << "fresh server, empty";
  EXPECT_TRUE(cache.up());
  EXPECT_EQ(changes, (std::vector<bool>{false, true}));
}

// Each new connection reports which server it reached (from the reply
// ahead of every other on it): a restarted Redis is another run_id.
TEST_F(RedisCacheLive, EachConnectionReportsTheServersRunId) {
  std::vector<std::string> seen;
  std::string v;
  patient();
  cache.on_server = [&](const std::string& id) { seen.push_back(id); };
  ASSERT_TRUE(cache.set("k", "v", 60, now_ms()));
  ASSERT_EQ(seen.size(), 1u) << "reported on connecting";
  EXPECT_EQ(seen[0].size(), 40u) << seen[0];
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(seen.size(), 1u) << "once per connection, not per command";
  server->stop();
  server->start();
  // A lookup that meets the closed connection, then one after the back-off.
  const int64_t t = now_ms();
  (void)cache.get("k", &v, t);
  EXPECT_EQ(cache.get("k", &v, t + 60000), RedisCache::Result::miss) << "fresh server, empty";
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_NE(seen[1], seen[0]) << "a restarted server is another run_id";
}

// So does the background client (the dispatcher's), from its reply stream:
// with no answer taken before the report.
TEST_F(RedisCacheLive, ABackgroundClientReportsTheServerToo) {
  RedisConfig c;
  c.port = port;
  c.connect_in_background = true;
  c.command_timeout_ms = 5000;
  cache.configure(c);
  std::vector<std::string> events;
  cache.on_server = [&](const std::string& id) {
    events.push_back("server " + std::to_string(id.size()) + (cache.has_answers() ? " after an answer" : ""));
  };
  ASSERT_TRUE(set_once_connected(5000)) << "never connected";
  const uint64_t ticket = cache.ask({"k"}, now_ms());
  const int64_t deadline = now_ms() + 5000;
  std::vector<RedisCache::Answer> got;
  while (got.empty() && now_ms() < deadline) {
    got = cache.take_answers(now_ms());
    if (got.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::hit);
  EXPECT_EQ(events, std::vector<std::string>{"server 40"});
}

// A Redis that refuses INFO (renamed away here; an ACL without it alike)
// leaves the server unknown, and nothing else: no error counted, the
// caller's commands go through.
TEST(RedisCacheTest, ARedisWithoutInfoIsServedWithTheServerUnknown) {
  const int port = free_port();
  RedisServer server(port, "", {"--rename-command", "INFO", ""});
  RedisCache cache;
  RedisConfig c;
  c.port = port;
  c.command_timeout_ms = 5000;
  cache.configure(c);
  int reported = 0;
  cache.on_server = [&](const std::string&) { reported++; };
  std::string v;
  EXPECT_TRUE(cache.set("k", "v", 60, now_ms()));
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "v");
  EXPECT_TRUE(cache.up());
  EXPECT_EQ(cache.errors(), 0u);
  EXPECT_EQ(reported, 0);
}

TEST(RedisCacheTest, TheRunIdIsReadFromItsOwnLine) {
  EXPECT_EQ(RedisCache::run_id_of("# Server\r\nredis_version:7.0.15\r\nrun_id:0123abcd\r\ntcp_port:6379\r\n"),
            "0123abcd");
  EXPECT_EQ(RedisCache::run_id_of("run_id:first\r\n"), "first");
  EXPECT_EQ(RedisCache::run_id_of("x:1\nrun_id:no-cr"), "no-cr");
  EXPECT_EQ(RedisCache::run_id_of("master_run_id:not-this\r\nredis_version:7\r\n"), "");
  EXPECT_EQ(RedisCache::run_id_of(""), "");
}

// set_nowait() writes the command but leaves the reply: the next command
// reads it first (replies come in order), so nothing is read out of step.
TEST_F(RedisCacheLive, SetNowaitLeavesItsRepliesForTheNextCommand) {
  patient();
  for (int i = 1; i <= 20; i++) {
    ASSERT_TRUE(cache.set_nowait("k" + std::to_string(i), "v" + std::to_string(i), 60, now_ms()));
  }
  ASSERT_TRUE(cache.set_nowait("forever", "x", 0, now_ms()));
  EXPECT_EQ(cache.unread_replies(), 21);
  std::string v;
  int64_t ttl = 0;
  ASSERT_EQ(cache.get("k7", &v, now_ms(), &ttl), RedisCache::Result::hit);
  EXPECT_EQ(v, "v7");
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 60000);
  EXPECT_EQ(cache.unread_replies(), 0);
  ASSERT_EQ(cache.get("forever", &v, now_ms(), &ttl), RedisCache::Result::hit);
  EXPECT_EQ(ttl, -1) << "ttl_s 0: no expiry";
  ASSERT_EQ(cache.get("k20", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "v20");
  EXPECT_TRUE(cache.up());
}

// Pauses every client of the test's Redis for `ms` (commands queue up).
void pause_redis(int port, int ms) {
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  redisReply* r = static_cast<redisReply*>(
      redisCommand(admin, "CLIENT PAUSE %d ALL", ms));
  ASSERT_TRUE(r != nullptr && r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  redisFree(admin);
}

// Replies left unread are bounded (64) without waiting for Redis: past the
// bound a SET is refused and an ask answered unavailable at once, while
// Redis is paused; nothing already written is lost.
TEST_F(RedisCacheLive, OutstandingRepliesAreBoundedWithoutWaiting) {
  std::string v;
  connect_now();
  pause_redis(port, 1500);  // ample for the checks below, on a slow machine too
  for (int i = 1; i <= 64; i++) {
    ASSERT_TRUE(cache.set_nowait("k" + std::to_string(i), "v" + std::to_string(i), 60, now_ms()));
  }
  EXPECT_EQ(cache.unread_replies(), 64);
  EXPECT_FALSE(cache.set_nowait("k65", "v65", 60, now_ms())) << "refused, not waited for";
  const uint64_t ticket = cache.ask({"k1"}, now_ms());
  EXPECT_FALSE(cache.awaiting());
  std::vector<RedisCache::Answer> got = cache.take_answers(now_ms());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::unavailable);
  EXPECT_EQ(cache.unread_replies(), 64);
  EXPECT_TRUE(cache.up()) << "slow is not down";
  // Once the pause is over the replies arrive and are read as an event loop
  // would (poll the descriptor, take), with no timeout: no ask is waiting.
  const int64_t deadline = now_ms() + 5000;
  while (cache.unread_replies() > 0 && now_ms() < deadline) {
    pollfd p{cache.fd(), POLLIN, 0};
    if (poll(&p, 1, 100) > 0) cache.take_answers(now_ms());
  }
  EXPECT_EQ(cache.unread_replies(), 0);
  EXPECT_TRUE(cache.set_nowait("k66", "v66", 60, now_ms())) << "room again";
  ASSERT_EQ(read_back("k64", &v), RedisCache::Result::hit);
  EXPECT_EQ(v, "v64");
  EXPECT_EQ(read_back("k65", &v), RedisCache::Result::miss) << "the refused SET";
}

// With WhenBehind::wait (a transaction's sets at COMMIT), a burst past the
// unread bound is not cut short: at 64 unread the replies are waited for,
// here while Redis is paused, and every SET is written.
TEST_F(RedisCacheLive, WaitingWhenBehindWritesEverySetOfABurst) {
  connected_then_paused(300);
  std::string v;
  for (int i = 1; i <= 300; i++) {
    ASSERT_TRUE(cache.set_nowait("k" + std::to_string(i), "v" + std::to_string(i), 60, now_ms(),
                                 RedisCache::WhenBehind::wait))
        << "SET " << i;
    ASSERT_LE(cache.unread_replies(), 64);
  }
  EXPECT_TRUE(cache.up());
  for (int i = 1; i <= 300; i++) {
    ASSERT_EQ(cache.get("k" + std::to_string(i), &v, now_ms()), RedisCache::Result::hit) << i;
    EXPECT_EQ(v, "v" + std::to_string(i));
  }
}

// ... but a Redis that stops answering is waited for once, up to the
// command timeout: then it is down, and the SETs after that are refused at
// once (backing off), not each waited for.
TEST_F(RedisCacheLive, WaitingWhenBehindIsBoundedByTheCommandTimeout) {
  connect_now();
  server->freeze();
  for (int i = 0; i < 64; i++) ASSERT_TRUE(cache.set_nowait("k" + std::to_string(i), "v", 60, now_ms()));
  EXPECT_FALSE(cache.set_nowait("more", "v", 60, now_ms(), RedisCache::WhenBehind::wait));
  EXPECT_FALSE(cache.up()) << "no reply within the command timeout: down";
  EXPECT_EQ(cache.unread_replies(), 0);
  const uint64_t errors = cache.errors();
  for (int i = 0; i < 100; i++) {
    EXPECT_FALSE(cache.set_nowait("after" + std::to_string(i), "v", 60, now_ms(), RedisCache::WhenBehind::wait));
  }
  EXPECT_EQ(cache.errors(), errors) << "backing off: not tried again";
  server->thaw();
}

// A lookup that waits for its reply anyway (get, get_many) waits for the
// unread ones before it too, instead of finding no room and missing.
TEST_F(RedisCacheLive, AWaitingLookupWaitsForTheUnreadRepliesBeforeIt) {
  connected_then_paused(300);
  std::string v;
  for (int i = 1; i <= 64; i++) ASSERT_TRUE(cache.set_nowait("k" + std::to_string(i), "v", 60, now_ms()));
  EXPECT_EQ(cache.unread_replies(), 64);
  EXPECT_EQ(cache.get("k64", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "v");
}

TEST_F(RedisCacheLive, GetManyAnswersEachKeyInOrderInOneRoundTrip) {
  patient();
  ASSERT_TRUE(cache.set("a", "alpha", 60, now_ms()));
  ASSERT_TRUE(cache.set("c", "gamma", 0, now_ms()));
  ASSERT_TRUE(cache.set_nowait("d", "delta", 30, now_ms()));  // its reply is read first
  auto found = cache.get_many({"a", "b", "c", "d"}, now_ms());
  ASSERT_EQ(found.size(), 4u);
  EXPECT_EQ(found[0].result, RedisCache::Result::hit);
  EXPECT_EQ(found[0].value, "alpha");
  EXPECT_GT(found[0].ttl_ms, 0);
  EXPECT_LE(found[0].ttl_ms, 60000);
  EXPECT_EQ(found[1].result, RedisCache::Result::miss);
  EXPECT_EQ(found[2].result, RedisCache::Result::hit);
  EXPECT_EQ(found[2].value, "gamma");
  EXPECT_EQ(found[2].ttl_ms, -1);
  EXPECT_EQ(found[3].result, RedisCache::Result::hit);
  EXPECT_EQ(found[3].value, "delta");
  EXPECT_TRUE(cache.get_many({}, now_ms()).empty());
  server->stop();
  auto down = cache.get_many({"a", "c"}, now_ms());
  ASSERT_EQ(down.size(), 2u);
  EXPECT_EQ(down[0].result, RedisCache::Result::unavailable);
  EXPECT_EQ(down[1].result, RedisCache::Result::unavailable);
}

TEST_F(RedisCacheLive, SetNowaitToAServerThatWentAwayIsAMissNotAHang) {
  ASSERT_TRUE(cache.set_nowait("k", "v", 60, now_ms()));
  server->stop();
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.unread_replies(), 0) << "they went with the connection";
  EXPECT_FALSE(cache.up());
}

// Waits (bounded) until the ask's answer can be taken, the way an event
// loop would: poll the connection's descriptor, then take what arrived.
std::vector<RedisCache::Answer> answers_when_ready(RedisCache& cache) {
  std::vector<RedisCache::Answer> got;
  const int64_t deadline = now_ms() + 5000;
  while (got.empty() && now_ms() < deadline) {
    if (cache.has_answers()) return cache.take_answers(now_ms());  // answered at once (no connection)
    pollfd p{cache.fd(), POLLIN, 0};
    if (poll(&p, 1, 100) > 0) got = cache.take_answers(now_ms());
  }
  return got;
}

// ask() writes its one command and returns; the answer is read off the
// socket only when take_answers() is called once the descriptor is readable.
TEST_F(RedisCacheLive, AskIsAnsweredWhenItsRepliesArriveWithoutWaitingForThem) {
  patient();
  ASSERT_TRUE(cache.set("a", "alpha", 60, now_ms()));
  ASSERT_TRUE(cache.set_nowait("c", "gamma", 0, now_ms()));
  const uint64_t ticket = cache.ask({"a", "b", "c"}, now_ms());
  EXPECT_GT(ticket, 0u);
  EXPECT_TRUE(cache.awaiting());
  EXPECT_FALSE(cache.has_answers()) << "nothing is read by ask() itself";
  EXPECT_EQ(cache.unread_replies(), 2) << "the SET's reply and the ask's";
  std::vector<RedisCache::Answer> got = answers_when_ready(cache);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  ASSERT_EQ(got[0].lookups.size(), 3u);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::hit);
  EXPECT_EQ(got[0].lookups[0].value, "alpha");
  EXPECT_GT(got[0].lookups[0].ttl_ms, 0);
  EXPECT_EQ(got[0].lookups[1].result, RedisCache::Result::miss);
  EXPECT_EQ(got[0].lookups[2].result, RedisCache::Result::hit);
  EXPECT_EQ(got[0].lookups[2].ttl_ms, -1);
  EXPECT_FALSE(cache.awaiting());
  EXPECT_EQ(cache.unread_replies(), 0);
  EXPECT_EQ(cache.ask_timeout_in_ms(now_ms()), -1) << "nothing left to time out";
}

// Asks and SETs share one connection: replies are matched in command order,
// and a command that waits (here a GET) reads the pending asks' replies
// first, keeping their answers for take_answers().
TEST_F(RedisCacheLive, AsksAndSetsAreAnsweredInCommandOrder) {
  patient();
  const uint64_t before = cache.ask({"x"}, now_ms());
  ASSERT_TRUE(cache.set_nowait("x", "one", 60, now_ms()));
  const uint64_t after = cache.ask({"x", "y"}, now_ms());
  std::string v;
  ASSERT_EQ(cache.get("y", &v, now_ms()), RedisCache::Result::miss);
  EXPECT_FALSE(cache.awaiting());
  EXPECT_TRUE(cache.has_answers());
  std::vector<RedisCache::Answer> got = cache.take_answers(now_ms());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].ticket, before);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::miss) << "asked before the SET";
  EXPECT_EQ(got[1].ticket, after);
  EXPECT_EQ(got[1].lookups[0].result, RedisCache::Result::hit) << "asked after it";
  EXPECT_EQ(got[1].lookups[0].value, "one");
  EXPECT_EQ(got[1].lookups[1].result, RedisCache::Result::miss);
}

// A Redis that stops answering (CLIENT PAUSE) leaves the ask pending until
// command_timeout_ms (20) has passed on the caller's clock; then it is
// answered unavailable and the connection dropped, not waited for.
TEST_F(RedisCacheLive, AnAskRedisDoesNotAnswerInTimeIsUnavailable) {
  connect_now();
  pause_redis(port, 3000);
  const int64_t t0 = now_ms();
  const uint64_t ticket = cache.ask({"k"}, t0);
  EXPECT_EQ(cache.ask_timeout_in_ms(t0), 20);
  EXPECT_TRUE(cache.take_answers(t0 + 5).empty()) << "paused: no reply, not timed out yet";
  EXPECT_EQ(cache.ask_timeout_in_ms(t0 + 5), 15);
  const uint64_t errors = cache.errors();
  std::vector<RedisCache::Answer> got = cache.take_answers(t0 + 20);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::unavailable);
  EXPECT_EQ(cache.errors(), errors + 1);
  EXPECT_FALSE(cache.up());
  EXPECT_FALSE(cache.awaiting());
  EXPECT_EQ(cache.fd(), -1) << "the connection was dropped";
}

// A command that runs out its timeout (20 ms) starts the back-off (100 ms)
// from the end of that wait: given the call's clock again 105 ms on, the
// client does not reconnect to the Redis that has just failed to answer
// (from the call's start, it would: and wait out another timeout).
TEST_F(RedisCacheLive, TheBackOffAfterATimeoutRunsFromTheEndOfTheWait) {
  std::string v;
  connect_now();
  server->freeze();
  const int64_t t0 = now_ms();
  EXPECT_EQ(cache.get("k", &v, t0), RedisCache::Result::unavailable);
  EXPECT_FALSE(cache.up());
  const uint64_t failures = cache.connection_failures();
  EXPECT_EQ(cache.get("k", &v, t0 + 105), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.connection_failures(), failures) << "tried again within the back-off";
  server->thaw();
}

TEST(RedisCacheTest, DisabledWhenPortIsZero) {
  RedisCache cache;
  RedisConfig c;
  c.port = 0;
  cache.configure(c);
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::unavailable);
  EXPECT_FALSE(cache.set("k", "v", 1, now_ms()));
  const uint64_t ticket = cache.ask({"k"}, now_ms());
  EXPECT_FALSE(cache.awaiting());
  EXPECT_TRUE(cache.has_answers()) << "answered at once";
  std::vector<RedisCache::Answer> got = cache.take_answers(now_ms());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::unavailable);
}

// A password and a database: the client logs in (AUTH, SELECT) on every
// connect, and its keys land in that database.
TEST(RedisCacheTest, LogsInWithPasswordAndDatabase) {
  const int port = free_port();
  RedisServer server(port, "s3cret");
  RedisCache cache;
  RedisConfig c;
  c.port = port;
  c.password = "s3cret";
  c.db = 3;
  c.command_timeout_ms = 5000;  // waited for: no timeout on a busy machine
  cache.configure(c);
  ASSERT_TRUE(cache.set("k", "in db 3", 60, now_ms()));
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "in db 3");
  EXPECT_TRUE(cache.up());
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "AUTH s3cret"));
  freeReplyObject(redisCommand(admin, "SELECT 3"));
  redisReply* r = static_cast<redisReply*>(redisCommand(admin, "GET npc_scale:cache:k"));
  ASSERT_TRUE(r != nullptr && r->type == REDIS_REPLY_STRING);
  EXPECT_EQ(std::string(r->str, r->len), "in db 3");
  freeReplyObject(r);
  redisFree(admin);
  // A database Redis does not have (16 by default) is a failed login.
  c.db = 99;
  cache.configure(c);
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::unavailable);
  EXPECT_FALSE(cache.up());
}

// An event loop's client pipelines its login ahead of the first command
// instead of waiting for it: with Redis not answering, an ask is under way,
// not a wait out of the command timeout (which would fail the connection).
// No SET is written until the login is through.
TEST(RedisCacheTest, ABackgroundClientsLoginDoesNotWait) {
  const int port = free_port();
  RedisServer server(port, "s3cret");
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "AUTH s3cret"));
  freeReplyObject(redisCommand(admin, "SET npc_scale:cache:k v"));
  RedisCache cache;
  RedisConfig c;
  c.port = port;
  c.password = "s3cret";
  c.connect_in_background = true;
  c.command_timeout_ms = 1000;
  cache.configure(c);
  server.freeze();
  // The first asks find the connect under way (answered at once); the
  // first one after it is through waits behind the login.
  const int64_t deadline = now_ms() + 5000;
  while (now_ms() < deadline && !cache.awaiting() && cache.errors() == 0) {
    cache.ask({"k"}, now_ms());
    if (!cache.awaiting()) cache.take_answers(now_ms());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool under_way = cache.awaiting();
  const bool set_written = cache.set_nowait("k2", "v2", 60, now_ms());
  server.thaw();
  EXPECT_TRUE(under_way) << "the ask never got past the login";
  EXPECT_EQ(cache.errors(), 0u) << "the login was waited for, and timed out";
  EXPECT_FALSE(set_written) << "a SET written before the login is through";
  // Redis answers again: asks are answered (after a reconnect if the
  // pending one timed out meanwhile on a slow machine).
  const int64_t until = now_ms() + 10000;
  bool hit = false;
  while (!hit && now_ms() < until) {
    if (!cache.awaiting()) cache.ask({"k"}, now_ms());
    for (const RedisCache::Answer& a : answers_when_ready(cache)) {
      hit = hit || a.lookups[0].result == RedisCache::Result::hit;
    }
  }
  EXPECT_TRUE(hit);
  EXPECT_TRUE(cache.up());
  redisFree(admin);
}

// A refused login, pipelined: the ask behind it is unavailable, Redis is
// reported down once (the message without the password), and no SET lands
// in another database meanwhile.
TEST(RedisCacheTest, ABackgroundClientsRefusedLoginIsDownOnce) {
  const int port = free_port();
  RedisServer server(port, "s3cret");
  for (const char* wrong : {"password", "database"}) {
    SCOPED_TRACE(wrong);
    RedisCache cache;
    std::vector<std::string> downs;
    cache.on_state_change = [&](bool up, const std::string& why) {
      if (!up) downs.push_back(why);
    };
    RedisConfig c;
    c.port = port;
    c.password = std::string(wrong) == "password" ? "wrong-password" : "s3cret";
    c.db = std::string(wrong) == "database" ? 99 : 0;  // Redis has 16
    c.connect_in_background = true;
    c.command_timeout_ms = 5000;
    cache.configure(c);
    // Fills and asks until the login's refusal comes back.
    const int64_t deadline = now_ms() + 5000;
    while (now_ms() < deadline && downs.empty()) {
      cache.set_nowait("leaked", "v", 60, now_ms());
      if (!cache.awaiting()) cache.ask({"k"}, now_ms());
      for (const RedisCache::Answer& a : answers_when_ready(cache)) {
        EXPECT_EQ(a.lookups[0].result, RedisCache::Result::unavailable);
      }
    }
    EXPECT_FALSE(cache.up());
    ASSERT_EQ(downs.size(), 1u);
    EXPECT_EQ(downs[0], std::string(wrong) == "password" ? "AUTH failed" : "SELECT 99 failed");
    // Another round: still down, not reported again.
    for (int i = 0; i < 3; i++) {
      cache.ask({"k"}, now_ms());
      answers_when_ready(cache);
    }
    EXPECT_EQ(downs.size(), 1u);
  }
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "AUTH s3cret"));
  redisReply* r = static_cast<redisReply*>(redisCommand(admin, "EXISTS npc_scale:cache:leaked"));
  ASSERT_TRUE(r != nullptr && r->type == REDIS_REPLY_INTEGER);
  EXPECT_EQ(r->integer, 0) << "a SET behind the refused SELECT landed in database 0";
  freeReplyObject(r);
  redisFree(admin);
}

// Redis refusing the lookup script itself (an ACL without @scripting) is
// reported down with the reason, not a silent miss on every lookup.
TEST_F(RedisCacheLive, ARefusedLookupScriptIsReportedDown) {
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "ACL SETUSER default -@scripting"));
  redisFree(admin);
  std::vector<std::string> downs;
  int ups = 0;
  cache.on_state_change = [&](bool up, const std::string& why) {
    if (up) {
      ups++;
    } else {
      downs.push_back(why);
    }
  };
  RedisConfig c;
  c.port = port;
  c.command_timeout_ms = 5000;
  cache.configure(c);
  std::string v;
  int64_t t = now_ms();
  EXPECT_EQ(cache.get("k", &v, t), RedisCache::Result::unavailable);
  EXPECT_FALSE(cache.up());
  ASSERT_EQ(downs.size(), 1u);
  EXPECT_NE(downs[0].find("EVAL"), std::string::npos) << downs[0];
  EXPECT_NE(downs[0].find("NOPERM"), std::string::npos) << downs[0];
  // Reconnects (each past its back-off) log in fine, but Redis is not
  // reported up, nor down again, while the script is refused.
  for (int i = 0; i < 3; i++) {
    t += 10000;
    EXPECT_EQ(cache.get("k", &v, t), RedisCache::Result::unavailable);
  }
  EXPECT_EQ(ups, 0);
  EXPECT_EQ(downs.size(), 1u);
  // Allowed again: the next lookup works, and Redis is up, reported once.
  admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "ACL SETUSER default +@scripting"));
  redisFree(admin);
  t += 10000;
  EXPECT_EQ(cache.get("k", &v, t), RedisCache::Result::miss);
  EXPECT_TRUE(cache.up());
  EXPECT_EQ(ups, 1);
}

namespace {
// A TCP relay between one client and Redis that passes the client's first
// command on alone and holds the rest until released, so another client's
// command can run in between: Redis may interleave one client's pipelined
// commands with others' when they arrive in separate reads. hiredis's
// reader finds where each command and reply ends.
class SplittingRelay {
 public:
  explicit SplittingRelay(int upstream_port) : upstream_port_(upstream_port) {
    listener_ = loopback_listener(1, &port_);
    thread_ = std::thread([this] { run(); });
  }
  ~SplittingRelay() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = released_ = true;
    }
    changed_.notify_all();
    thread_.join();
    for (int fd : {listener_, client_, upstream_}) {
      if (fd >= 0) close(fd);
    }
  }
  int port() const { return port_; }
  // Waits until Redis has answered the first command alone.
  bool wait_first_replied() {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(5), [this] { return first_replied_; });
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released_ = true;
    }
    changed_.notify_all();
  }

 private:
  bool stopping() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stop_;
  }
  // Reads from fd until `reader` has one whole message; returns the bytes
  // read (the message, perhaps with more behind it) and its length.
  bool read_one(int fd, std::string* bytes, size_t* message_len) {
    std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(), redisReaderFree);
    size_t fed = 0;
    while (!stopping()) {
      for (; fed < bytes->size(); fed++) {
        redisReaderFeed(reader.get(), bytes->data() + fed, 1);
        void* msg = nullptr;
        if (redisReaderGetReply(reader.get(), &msg) != REDIS_OK) return false;
        if (msg) {
          freeReplyObject(msg);
          *message_len = fed + 1;
          return true;
        }
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) return false;
      bytes->append(buf, static_cast<size_t>(n));
    }
    return false;
  }
  static bool write_all(int fd, const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  void run() {
    pollfd l{listener_, POLLIN, 0};
    while (poll(&l, 1, 100) <= 0) {
      if (stopping()) return;
    }
    client_ = accept(listener_, nullptr, nullptr);
    upstream_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(upstream_port_));
    if (connect(upstream_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return;
    std::string held, reply;
    size_t first = 0, reply_len = 0;
    if (!read_one(client_, &held, &first) || !write_all(upstream_, held.substr(0, first))) return;
    held.erase(0, first);
    if (!read_one(upstream_, &reply, &reply_len) || !write_all(client_, reply)) return;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      first_replied_ = true;
      changed_.notify_all();
      changed_.wait(lock, [this] { return released_; });
    }
    if (!write_all(upstream_, held)) return;
    // Then a plain relay both ways until stopped.
    while (!stopping()) {
      pollfd p[2] = {{client_, POLLIN, 0}, {upstream_, POLLIN, 0}};
      if (poll(p, 2, 100) <= 0) continue;
      for (int i = 0; i < 2; i++) {
        if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
        char buf[4096];
        ssize_t n = read(p[i].fd, buf, sizeof(buf));
        if (n <= 0 || !write_all(p[1 - i].fd, std::string(buf, static_cast<size_t>(n)))) return;
      }
    }
  }

  int upstream_port_;
  int listener_ = -1, client_ = -1, upstream_ = -1, port_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool first_replied_ = false, released_ = false, stop_ = false;
  std::thread thread_;
};
}  // namespace

// An ask reads each key's value and time left at one instant: a SET by
// another client landing between the ask's commands cannot pair the new
// value with the old key's "no expiry" (L1 would then keep it for good).
TEST_F(RedisCacheLive, AKeysValueAndTimeLeftAreReadAtOneInstant) {
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "SET npc_scale:cache:k old"));  // no expiry
  SplittingRelay relay(port);
  RedisCache split;
  RedisConfig c;
  c.port = relay.port();
  c.command_timeout_ms = 5000;  // waited for: no timeout on a busy machine
  split.configure(c);
  const uint64_t ticket = split.ask({"k"}, now_ms());
  ASSERT_TRUE(relay.wait_first_replied());
  freeReplyObject(redisCommand(admin, "SET npc_scale:cache:k new EX 100"));
  relay.release();
  std::vector<RedisCache::Answer> got = answers_when_ready(split);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  ASSERT_EQ(got[0].lookups.size(), 1u);
  const RedisCache::Lookup& l = got[0].lookups[0];
  ASSERT_EQ(l.result, RedisCache::Result::hit);
  // Read before the SET or after it, but never half of each.
  if (l.value == "old") {
    EXPECT_EQ(l.ttl_ms, -1) << "the old value, which has no expiry";
  } else {
    EXPECT_EQ(l.value, "new");
    EXPECT_GT(l.ttl_ms, 0) << "the new value with its own expiry, not the old key's none";
    EXPECT_LE(l.ttl_ms, 100000);
  }
  redisFree(admin);
}

namespace {
// A listener whose accept queue is full: the kernel drops further SYNs, so a
// connect to it neither succeeds nor fails, as to a host that has gone dark.
class SilentListener {
 public:
  SilentListener() {
    listener_ = loopback_listener(0, &port_);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    for (int i = 0; i < 2; i++) {  // fill the queue (it holds one), never accepted
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      fillers_.push_back(fd);
    }
  }
  ~SilentListener() {
    for (int fd : fillers_) close(fd);
    close(listener_);
  }
  // A client configuration that points at it.
  RedisConfig config(int connect_timeout_ms, bool in_background) const {
    RedisConfig c;
    c.port = port_;
    c.connect_timeout_ms = connect_timeout_ms;
    c.connect_in_background = in_background;
    return c;
  }

 private:
  int listener_ = -1, port_ = 0;
  std::vector<int> fillers_;
};
}  // namespace

// Accepts every connection and closes it at once, as a Redis at maxclients
// or a proxy whose backend is down.
class ClosingListener {
 public:
  // greeting: written before the close (Redis at maxclients writes an error).
  explicit ClosingListener(std::string greeting = {})
      : listener_(loopback_listener(16, &port_)), greeting_(std::move(greeting)) {
    thread_ = std::thread([this] {
      for (;;) {
        int fd = accept(listener_, nullptr, nullptr);
        if (fd < 0) return;  // shut down
        if (!greeting_.empty()) (void)!write(fd, greeting_.data(), greeting_.size());
        close(fd);
      }
    });
  }
  ~ClosingListener() {
    shutdown(listener_, SHUT_RDWR);
    thread_.join();
    close(listener_);
  }
  // A blocking client's configuration that points at it.
  RedisConfig config() const {
    RedisConfig c;
    c.port = port_;
    c.connect_timeout_ms = 1000;
    c.command_timeout_ms = 1000;
    return c;
  }

 private:
  int port_ = 0;
  int listener_;
  std::string greeting_;
  std::thread thread_;
};

// The dispatcher's client never waits for a connect: while it is under way
// an ask is answered unavailable at once, and a connect that does not get
// through within the timeout fails like any other (clock passed in: no sleeps).
TEST(RedisCacheTest, ABackgroundConnectToASilentHostIsAMissNotAWait) {
  SilentListener silent;
  RedisCache cache;
  cache.configure(silent.config(100, /*in_background=*/true));
  const int64_t t0 = now_ms();
  const uint64_t ticket = cache.ask({"k"}, t0);
  EXPECT_TRUE(cache.connecting()) << "left under way, not waited for";
  std::vector<RedisCache::Answer> got = cache.take_answers(t0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, ticket);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::unavailable);
  EXPECT_FALSE(cache.set_nowait("k", "v", 60, t0 + 50)) << "still connecting: not written";
  EXPECT_TRUE(cache.connecting());
  EXPECT_TRUE(cache.up()) << "not failed yet";
  EXPECT_EQ(cache.errors(), 0u);

  (void)cache.ask({"k"}, t0 + 100);
  EXPECT_FALSE(cache.connecting());
  EXPECT_FALSE(cache.up()) << "timed out: down, and backing off";
  EXPECT_EQ(cache.errors(), 1u);
  (void)cache.ask({"k"}, t0 + 150);
  EXPECT_FALSE(cache.connecting()) << "no new attempt during the back-off";
}

// A blocking client (SQL functions in backends) waits for the connect, up to the timeout.
TEST(RedisCacheTest, ABlockingConnectToASilentHostFailsAfterItsTimeout) {
  SilentListener silent;
  RedisCache cache;
  cache.configure(silent.config(50, /*in_background=*/false));
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::unavailable);
  EXPECT_FALSE(cache.connecting());
  EXPECT_FALSE(cache.up());
  EXPECT_EQ(cache.errors(), 1u);
}

TEST_F(RedisCacheLive, ABackgroundConnectGetsThroughToALiveServer) {
  RedisConfig c;
  c.port = port;
  c.command_timeout_ms = 5000;  // the reply below: no timeout on a busy machine
  c.connect_in_background = true;
  cache.configure(c);
  ASSERT_TRUE(set_once_connected(5000)) << "never connected";
  EXPECT_FALSE(cache.connecting());
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "v");
}

// A host name: the dispatcher's client looks it up in the background (a
// miss while it runs), then connects.
TEST_F(RedisCacheLive, ABackgroundConnectByNameGetsThroughToALiveServer) {
  RedisConfig c;
  c.host = "localhost";
  c.port = port;
  c.command_timeout_ms = 5000;
  c.connect_in_background = true;
  cache.configure(c);
  ASSERT_TRUE(set_once_connected(30000, [&] {
    EXPECT_TRUE(cache.up()) << "a lookup or connect under way is not a failure";
  })) << "never connected";
  EXPECT_FALSE(cache.connecting());
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(v, "v");
  EXPECT_EQ(cache.errors(), 0u);
}

namespace {
// A lookup that runs until the test ends it (a DNS server that does not
// answer, then does): what a real one cannot be made to do on demand.
class HeldLookup : public HostLookup {
 public:
  State poll() override { return state_; }
  // Done: the host is 127.0.0.1 at each of these ports, in this order.
  void answer(const std::vector<int>& ports) {
    for (int port : ports) {
      SocketAddress a{};
      auto* in = reinterpret_cast<sockaddr_in*>(&a.addr);
      in->sin_family = AF_INET;
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      in->sin_port = htons(static_cast<uint16_t>(port));
      a.len = sizeof(sockaddr_in);
      addresses_.push_back(a);
    }
    state_ = State::done;
  }
};

// Hands out HeldLookups for the host name "redis.example", keeping the last.
struct HeldLookups {
  HeldLookup* last = nullptr;
  int count = 0;
  std::function<std::unique_ptr<HostLookup>(const std::string&, int)> starter() {
    return [this](const std::string& host, int) {
      EXPECT_EQ(host, "redis.example");
      count++;
      auto l = std::make_unique<HeldLookup>();
      last = l.get();
      return std::unique_ptr<HostLookup>(std::move(l));
    };
  }
};
}  // namespace

// The dispatcher's client never waits for a host name's lookup: while it
// runs, every call is a miss at once. One that outlasts the connect timeout
// is reported down once (and counted) but left to run; when it answers, the
// connect goes on from there (clock passed in: no sleeps).
TEST_F(RedisCacheLive, ALookupUnderWayIsAMissAndOneOverdueIsReportedDownOnce) {
  HeldLookups lookups;
  cache.start_lookup = lookups.starter();
  std::vector<std::pair<bool, std::string>> changes;
  cache.on_state_change = [&](bool up, const std::string& why) { changes.emplace_back(up, why); };
  RedisConfig c;
  c.host = "redis.example";
  c.port = port;
  c.connect_timeout_ms = 100;
  c.command_timeout_ms = 5000;  // the reply after the connect: no timeout on a busy machine
  c.connect_in_background = true;
  cache.configure(c);

  const int64_t t0 = now_ms();
  (void)cache.ask({"k"}, t0);
  std::vector<RedisCache::Answer> got = cache.take_answers(t0);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].lookups[0].result, RedisCache::Result::unavailable) << "a miss, not a wait";
  EXPECT_TRUE(cache.connecting());
  EXPECT_TRUE(cache.up());
  EXPECT_EQ(cache.errors(), 0u);
  EXPECT_FALSE(cache.set_nowait("k", "v", 60, t0 + 99));
  EXPECT_TRUE(cache.up()) << "not overdue yet";

  EXPECT_FALSE(cache.set_nowait("k", "v", 60, t0 + 100));
  EXPECT_FALSE(cache.up()) << "overdue: down";
  EXPECT_EQ(cache.errors(), 1u);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_NE(changes[0].second.find("redis.example"), std::string::npos) << changes[0].second;
  EXPECT_FALSE(cache.set_nowait("k", "v", 60, t0 + 5000));
  EXPECT_EQ(cache.errors(), 1u) << "reported once";
  EXPECT_TRUE(cache.connecting()) << "still running, not started again";
  EXPECT_EQ(lookups.count, 1);

  lookups.last->answer({port});
  ASSERT_TRUE(set_once_connected(5000)) << "never connected";
  EXPECT_EQ(lookups.count, 1);
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_TRUE(cache.up());
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[1].first) << "back up once Redis answered";
}

// A host with several addresses: one that refuses the connect is passed
// over for the next, without a failure.
TEST_F(RedisCacheLive, EveryAddressOfTheHostIsTriedInTurn) {
  HeldLookups lookups;
  cache.start_lookup = lookups.starter();
  RedisConfig c;
  c.host = "redis.example";
  c.port = port;
  c.command_timeout_ms = 5000;
  c.connect_in_background = true;
  cache.configure(c);
  EXPECT_FALSE(cache.set_nowait("k", "v", 60, now_ms()));
  ASSERT_NE(lookups.last, nullptr);
  const int refused = free_port();  // nothing listens there
  lookups.last->answer({refused, port});
  ASSERT_TRUE(set_once_connected(5000)) << "never connected";
  EXPECT_TRUE(cache.up());
  EXPECT_EQ(cache.errors(), 0u) << "a refused address is not a failure while another is left";
  EXPECT_EQ(lookups.count, 1);
  std::string v;
  EXPECT_EQ(cache.get("k", &v, now_ms()), RedisCache::Result::hit);
}

// An error reply concerns its command only: a key someone else stored as
// another type is a miss, the keys asked with it are still answered, and
// the connection stays up (no back-off, no "down").
TEST_F(RedisCacheLive, AnErrorReplyIsAMissNotADisconnect) {
  RedisConfig c;  // replies are waited for here: no timeout on a busy machine
  c.port = port;
  c.command_timeout_ms = 5000;
  cache.configure(c);
  ASSERT_TRUE(cache.set("good", "value", 60, now_ms()));
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "LPUSH npc_scale:cache:listy x"));
  const uint64_t errors_before = cache.errors();
  auto found = cache.get_many({"listy", "good"}, now_ms());
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].result, RedisCache::Result::miss) << "WRONGTYPE on its GET";
  EXPECT_EQ(found[1].result, RedisCache::Result::hit);
  EXPECT_EQ(found[1].value, "value");
  EXPECT_EQ(cache.errors(), errors_before + 1);
  EXPECT_NE(cache.last_reply_error().find("WRONGTYPE"), std::string::npos) << cache.last_reply_error();
  EXPECT_TRUE(cache.up());
  // A SET Redis refuses (out of memory under noeviction) is not stored, and
  // says so when waited for; the connection is kept for what follows.
  freeReplyObject(redisCommand(admin, "CONFIG SET maxmemory 1"));
  EXPECT_FALSE(cache.set("refused", "value", 60, now_ms()));
  freeReplyObject(redisCommand(admin, "CONFIG SET maxmemory 0"));
  EXPECT_TRUE(cache.up());
  std::string v;
  EXPECT_EQ(cache.get("good", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(cache.get("refused", &v, now_ms()), RedisCache::Result::miss);
  EXPECT_EQ(cache.connection_failures(), 0u) << "error replies are not connection failures";
  server->stop();
  EXPECT_EQ(cache.get("good", &v, now_ms()), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.connection_failures(), 1u) << "a lost connection is";
  redisFree(admin);
}

// With the unread bound reached and Redis refusing every SET (a full Redis
// under noeviction), more fills are refused or taken, never a crash; and
// with Redis gone, the bound is met with "down", not a write to a closed
// connection.
TEST_F(RedisCacheLive, TheUnreadBoundSurvivesErrorRepliesAndAClosedConnection) {
  signal(SIGPIPE, SIG_IGN);  // as in every Postgres process: a closed socket is an error, not a kill
  // Room to wait for 200 OOM replies on a busy machine (20 ms is the default).
  RedisConfig c;
  c.port = port;
  c.command_timeout_ms = 5000;
  cache.configure(c);
  std::string v;
  ASSERT_EQ(cache.get("k0", &v, now_ms()), RedisCache::Result::miss);  // connected
  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "CONFIG SET maxmemory 1"));
  redisFree(admin);
  for (int i = 0; i < 200; i++) cache.set_nowait("k" + std::to_string(i), "v", 60, now_ms());
  ASSERT_EQ(cache.get("k0", &v, now_ms()), RedisCache::Result::miss);  // every reply read
  EXPECT_TRUE(cache.up()) << "error replies are not a disconnect";
  EXPECT_GT(cache.errors(), 0u);
  EXPECT_NE(cache.last_reply_error().find("OOM"), std::string::npos) << cache.last_reply_error();
  admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "CONFIG SET maxmemory 0"));
  redisFree(admin);
  // The bound reached with no reply read, then Redis dies: making room
  // reads the end of the connection, which fails it. The next fill must see
  // that (refused), not write to the connection just closed.
  pause_redis(port, 60000);
  for (int i = 0; i < 64; i++) ASSERT_TRUE(cache.set_nowait("p" + std::to_string(i), "v", 60, now_ms()));
  server->stop();
  EXPECT_FALSE(cache.set_nowait("after", "v", 60, now_ms()));
  EXPECT_FALSE(cache.up());
  for (int i = 0; i < 100; i++) EXPECT_FALSE(cache.set_nowait("gone" + std::to_string(i), "v", 60, now_ms()));
  EXPECT_EQ(cache.get("k0", &v, now_ms()), RedisCache::Result::unavailable);
}

// Only SET replies unread, and Redis stops answering: after the unread-SET
// timeout (5 s) the connection is failed, so a host that went away is seen
// as down instead of leaving L2 refused forever.
TEST_F(RedisCacheLive, UnreadSetRepliesTimeOutInTheEnd) {
  connect_now();
  pause_redis(port, 60000);
  const int64_t t0 = now_ms();
  for (int i = 0; i < 64; i++) ASSERT_TRUE(cache.set_nowait("k" + std::to_string(i), "v", 60, t0));
  EXPECT_FALSE(cache.set_nowait("more", "v", 60, t0 + 4000)) << "full, still waiting";
  EXPECT_TRUE(cache.up()) << "slow is not down";
  EXPECT_FALSE(cache.set_nowait("more", "v", 60, t0 + 5000));
  EXPECT_FALSE(cache.up()) << "5 s without a reply to a SET: down";
  EXPECT_EQ(cache.unread_replies(), 0);
}

// A SET whose loss is reported (a cache_set()'s) names its key whenever it
// may not have landed: refused by Redis (out of memory), unread when the
// connection was lost, or not sent at all (backing off). A SET answered OK,
// or one whose loss is not reported, never does; nor does the destructor.
TEST_F(RedisCacheLive, ALostSetIsReportedByItsKey) {
  signal(SIGPIPE, SIG_IGN);
  RedisConfig c;  // replies are waited for here: no timeout on a busy machine
  c.port = port;
  c.command_timeout_ms = 5000;
  cache.configure(c);
  std::vector<std::string> lost;
  cache.on_set_lost = [&](const std::string& key) { lost.push_back(key); };
  const auto skip = RedisCache::WhenBehind::skip;
  constexpr bool kReported = true;
  std::string v;
  ASSERT_TRUE(cache.set_nowait("landed", "v", 60, now_ms(), skip, kReported));
  ASSERT_TRUE(cache.set_nowait("quiet", "v", 60, now_ms()));
  ASSERT_TRUE(cache.read_outstanding(now_ms()));
  EXPECT_EQ(cache.unread_replies(), 0);
  EXPECT_TRUE(lost.empty());
  ASSERT_EQ(cache.get("landed", &v, now_ms()), RedisCache::Result::hit);

  redisContext* admin = redisConnect("127.0.0.1", port);
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "CONFIG SET maxmemory 1"));
  ASSERT_TRUE(cache.set_nowait("refused", "v", 60, now_ms(), skip, kReported));
  ASSERT_TRUE(cache.set_nowait("refused-quiet", "v", 60, now_ms()));
  EXPECT_TRUE(cache.read_outstanding(now_ms())) << "an error reply keeps the connection";
  EXPECT_EQ(lost, std::vector<std::string>{"refused"});
  freeReplyObject(redisCommand(admin, "CONFIG SET maxmemory 0"));
  redisFree(admin);

  pause_redis(port, 60000);
  ASSERT_TRUE(cache.set_nowait("unread", "v", 60, now_ms(), skip, kReported));
  ASSERT_TRUE(cache.set_nowait("unread-quiet", "v", 60, now_ms()));
  server->stop();
  EXPECT_FALSE(cache.read_outstanding(now_ms()));
  EXPECT_EQ(lost, (std::vector<std::string>{"refused", "unread"}));

  EXPECT_FALSE(cache.set_nowait("not-sent", "v", 60, now_ms(), skip, kReported));
  EXPECT_FALSE(cache.set_nowait("not-sent-quiet", "v", 60, now_ms()));
  EXPECT_EQ(lost, (std::vector<std::string>{"refused", "unread", "not-sent"}));

  // Backing off: a DEL that may wait for the back-off does not even try; an
  // invalidation (the default) does.
  const uint64_t failures = cache.connection_failures();
  EXPECT_FALSE(cache.del("k", now_ms(), /*even_backing_off=*/false).has_value());
  EXPECT_EQ(cache.connection_failures(), failures);
  EXPECT_FALSE(cache.del("k", now_ms()).has_value());
  EXPECT_EQ(cache.connection_failures(), failures + 1);
}

// A sweep deletes the keys its predicate picks (offered without the
// prefix), and no others.
TEST_F(RedisCacheLive, ASweepDeletesOnlyThePickedKeys) {
  patient();
  for (const char* k : {"a", "b", "c"}) ASSERT_TRUE(cache.set(k, "v", 60, now_ms()));
  std::vector<std::string> offered;
  const int64_t deleted = cache.sweep(now_ms(), [&](std::string_view key) {
    offered.emplace_back(key);
    return key == "b";
  }, /*even_backing_off=*/false);
  EXPECT_EQ(deleted, 1);
  std::sort(offered.begin(), offered.end());
  EXPECT_EQ(offered, (std::vector<std::string>{"a", "b", "c"}));
  std::string v;
  EXPECT_EQ(cache.get("a", &v, now_ms()), RedisCache::Result::hit);
  EXPECT_EQ(cache.get("b", &v, now_ms()), RedisCache::Result::miss);
  EXPECT_EQ(cache.get("c", &v, now_ms()), RedisCache::Result::hit);
}

// Unread reported SETs when the client goes away are not lost: they are in
// the socket, and Redis reads them before the close.
TEST_F(RedisCacheLive, TheDestructorReportsNothing) {
  std::vector<std::string> lost;
  {
    RedisCache client;
    RedisConfig c;
    c.port = port;
    c.command_timeout_ms = 5000;
    client.configure(c);
    client.on_set_lost = [&](const std::string& key) { lost.push_back(key); };
    ASSERT_TRUE(client.set_nowait("at-exit", "v", 60, now_ms(), RedisCache::WhenBehind::skip, true));
  }
  EXPECT_TRUE(lost.empty());
  patient();
  std::string v;
  // The close after it does not undo it.
  for (int i = 0; i < 100 && cache.get("at-exit", &v, now_ms()) != RedisCache::Result::hit; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(v, "v");
}

// A server that takes the connection and drops it is not "up" for having
// taken it: Redis is reported down once, and the back-off keeps growing
// (it was reset by each connect: a reconnect every 100 ms, logged twice).
// A blocking client of a ClosingListener, recording its state changes.
struct ClosingListenerClient {
  explicit ClosingListenerClient(const ClosingListener& listener) {
    cache.configure(listener.config());
    cache.on_state_change = [this](bool up, const std::string&) { changes.push_back(up); };
  }
  RedisCache cache;
  std::vector<bool> changes;
};

TEST(RedisCacheTest, AServerThatDropsEveryConnectionIsDownOnceAndBacksOff) {
  ClosingListener closing;
  ClosingListenerClient client(closing);
  RedisCache& cache = client.cache;
  const std::vector<bool>& changes = client.changes;
  std::string v;
  const int64_t t0 = now_ms();
  EXPECT_EQ(cache.get("k", &v, t0), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.connection_failures(), 1u);
  // After the first back-off (100 ms): one more try, which fails too.
  EXPECT_EQ(cache.get("k", &v, t0 + 100), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.connection_failures(), 2u);
  // The back-off has doubled: 150 ms after that try is too soon for another.
  EXPECT_EQ(cache.get("k", &v, t0 + 250), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.connection_failures(), 2u) << "no reconnect within the grown back-off";
  EXPECT_EQ(cache.get("k", &v, t0 + 300), RedisCache::Result::unavailable);
  EXPECT_EQ(cache.connection_failures(), 3u);
  EXPECT_FALSE(cache.up());
  EXPECT_EQ(changes, std::vector<bool>{false}) << "one 'down' report, no 'up' in between";
}

// The same when it writes an error before closing, as Redis at maxclients:
// an error reply does not make it "up".
TEST(RedisCacheTest, AServerAtMaxclientsIsNeverUpAndBacksOff) {
  // Writing to the closed connection raises SIGPIPE, ignored in every
  // PostgreSQL process (this test's process has to say so itself).
  signal(SIGPIPE, SIG_IGN);
  ClosingListener closing("-ERR max number of clients reached\r\n");
  ClosingListenerClient client(closing);
  RedisCache& cache = client.cache;
  const std::vector<bool>& changes = client.changes;
  std::string v;
  const int64_t t0 = now_ms();
  // A lookup every 100 ms for 2 s (clock passed in): each meets the error
  // reply or the closed connection, never a value.
  for (int i = 0; i < 20; i++) EXPECT_NE(cache.get("k", &v, t0 + 100 * i), RedisCache::Result::hit);
  // Back-off 100, 200, 400, 800 ms: at most 5 connections fail in 2 s (20
  // when each error reply reset it).
  EXPECT_LE(cache.connection_failures(), 5u);
  EXPECT_GE(cache.connection_failures(), 3u);
  EXPECT_FALSE(cache.up());
  EXPECT_EQ(std::count(changes.begin(), changes.end(), true), 0) << "never reported up";
}
