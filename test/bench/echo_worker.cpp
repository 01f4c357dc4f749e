// echo_worker: the overhead benchmark's baseline — the least a queue in
// Postgres can cost on this machine, with no npc_scale in the path.
//
// The baseline's enqueue function INSERTs a row whose trigger sends
// NOTIFY npc_load_requests '<id>' at commit. This program LISTENs for those,
// waits the same fixed service time as the simulated GPUs (a timer, not a
// sleep: one event loop), then answers with the baseline's answer function
// (an UPDATE and NOTIFY npc_scale_decisions '<id>', one durable commit) on a
// small pool of connections. Each answer carries the service time this
// program actually gave it (its timer wakes late on a VM, as the simulated
// GPUs' do), so the benchmark can subtract what was really spent. npc_load drives it exactly as it drives
// npc_scale, so the difference between the two is what npc_scale adds.
//
//   echo_worker --conninfo STR --service-ms X [--pool N]
// Runs until SIGINT/SIGTERM. Build: libpq only.
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <queue>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Due {
  Clock::time_point at;
  Clock::time_point received;
  Clock::time_point fired;  // when the timer was seen due: the service ends here
  std::string id;
  bool operator>(const Due& o) const { return at > o.at; }
};

struct Conn {
  PGconn* conn = nullptr;
  bool busy = false;
};

PGconn* connect_or_die(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::fprintf(stderr, "echo_worker: connection failed: %s", PQerrorMessage(c));
    std::exit(1);
  }
  return c;
}

void exec_or_die(PGconn* c, const char* sql) {
  PGresult* r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    std::fprintf(stderr, "echo_worker: %s: %s", sql, PQresultErrorMessage(r));
    std::exit(1);
  }
  PQclear(r);
}

}  // namespace

int main(int argc, char** argv) {
  std::string conninfo;
  double service_ms = -1;
  int pool_size = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--conninfo") conninfo = argv[i + 1];
    else if (a == "--service-ms") service_ms = std::atof(argv[i + 1]);
    else if (a == "--pool") pool_size = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "echo_worker: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (conninfo.empty() || service_ms < 0 || pool_size < 1 || pool_size > 16) {
    std::fprintf(stderr, "usage: echo_worker --conninfo STR --service-ms X [--pool 1-16]\n");
    return 2;
  }

  PGconn* listen = connect_or_die(conninfo);
  exec_or_die(listen, "LISTEN npc_load_requests");
  PQsetnonblocking(listen, 1);
  std::vector<Conn> pool(static_cast<size_t>(pool_size));
  for (Conn& c : pool) {
    c.conn = connect_or_die(conninfo);
    PGresult* r = PQprepare(c.conn, "answer", "SELECT npc_baseline.answer($1::bigint, $2::float8)", 0, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      std::fprintf(stderr, "echo_worker: PREPARE: %s", PQresultErrorMessage(r));
      return 1;
    }
    PQclear(r);
    PQsetnonblocking(c.conn, 1);
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> timers;
  std::deque<Due> ready;  // due, waiting for a free connection
  const auto service = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(service_ms));
  uint64_t answered = 0;
  std::vector<pollfd> fds;
  while (!g_stop) {
    const auto now = Clock::now();
    while (!timers.empty() && timers.top().at <= now) {
      ready.push_back(timers.top());
      ready.back().fired = now;
      timers.pop();
    }
    for (Conn& c : pool) {
      if (ready.empty()) break;
      if (c.busy) continue;
      const Due& d = ready.front();
      const std::string served_ms =
          std::to_string(std::chrono::duration<double, std::milli>(d.fired - d.received).count());
      const char* v[2] = {d.id.c_str(), served_ms.c_str()};
      if (!PQsendQueryPrepared(c.conn, "answer", 2, v, nullptr, nullptr, 0)) {
        std::fprintf(stderr, "echo_worker: send: %s", PQerrorMessage(c.conn));
        return 1;
      }
      PQflush(c.conn);
      c.busy = true;
      ready.pop_front();
    }

    fds.clear();
    fds.push_back(pollfd{PQsocket(listen), POLLIN, 0});
    for (Conn& c : pool) fds.push_back(pollfd{PQsocket(c.conn), POLLIN, 0});
    // ppoll: a nanosecond timeout, so the service time is as exact as the GPUs' timers.
    timespec ts{1, 0};
    if (!timers.empty()) {
      auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(timers.top().at - Clock::now()).count();
      if (left < 0) left = 0;
      ts.tv_sec = static_cast<time_t>(left / 1000000000);
      ts.tv_nsec = static_cast<long>(left % 1000000000);
    }
    if (ppoll(fds.data(), fds.size(), &ts, nullptr) < 0) {
      if (errno == EINTR) continue;
      std::perror("echo_worker: poll");
      return 1;
    }
    if (fds[0].revents) {
      if (!PQconsumeInput(listen)) {
        std::fprintf(stderr, "echo_worker: LISTEN connection: %s", PQerrorMessage(listen));
        return 1;
      }
      while (PGnotify* n = PQnotifies(listen)) {
        const auto now = Clock::now();
        timers.push(Due{now + service, now, {}, n->extra});
        PQfreemem(n);
      }
    }
    for (size_t i = 0; i < pool.size(); i++) {
      Conn& c = pool[i];
      if (!fds[i + 1].revents || !c.busy) continue;
      if (!PQconsumeInput(c.conn)) {
        std::fprintf(stderr, "echo_worker: %s", PQerrorMessage(c.conn));
        return 1;
      }
      while (c.busy && !PQisBusy(c.conn)) {
        PGresult* r = PQgetResult(c.conn);
        if (r == nullptr) {
          c.busy = false;
          answered++;
          break;
        }
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
          std::fprintf(stderr, "echo_worker: answer: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
      }
    }
  }
  std::fprintf(stderr, "echo_worker: answered %llu\n", static_cast<unsigned long long>(answered));
  PQfinish(listen);
  for (Conn& c : pool) PQfinish(c.conn);
  return 0;
}
