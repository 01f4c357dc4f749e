// npc_load: a game server driving NPCs against npc_scale, for the benchmark
// and the live demo.
//
// Each NPC thinks (exponential think time), then queues one decision with
// npc_scale.request_decision() (a prepared statement, as a game server's
// driver would use) on a small pool of libpq connections, learns
// the decision's id from the result, and learns that it is answered from
// NOTIFY npc_scale_decisions '<id>' on one dedicated LISTEN connection.
// Latency = notification arrival - request issue (steady clock); a request
// that waits locally for a free pool connection counts that wait too.
//
// One thread, one event loop: ppoll() over every connection's socket, a timer
// heap for think times and the periodic ticks, signals unblocked only inside
// ppoll() so SIGINT/SIGTERM can never be missed. No sleeps, no threads.
//
// Build (libpq only):
//   g++ -std=c++17 -O2 -g -Wall -Wextra -I$(pg_config --includedir)
//       test/bench/npc_load.cpp -lpq -o build/npc_load   (one line)
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

double ms_between(TimePoint a, TimePoint b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
TimePoint after_ms(TimePoint t, double ms) {
  return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms));
}

// ---------------------------------------------------------------- options --
struct Options {
  std::string conninfo;
  int npcs = 50;
  int pool = 8;
  double think_ms = 2000;
  uint64_t seed = 1;
  double duration_s = 0;  // measured seconds; 0 = until SIGINT/SIGTERM
  bool duration_given = false;
  double warmup_s = 5;
  double service_ms = 0;
  bool service_given = false;
  bool priority_mix = false;
  long repeat = 0;  // > 0: each NPC cycles through this many prompts (cacheable repeats)
  bool dashboard = false;
  std::string report;
  std::string enqueue_function = "npc_scale.request_decision";
  bool rss = false;
  double grace_s = 10;
};

void usage(FILE* out) {
  std::fprintf(out,
      "usage: npc_load --conninfo STR [options]\n"
      "  --conninfo STR        libpq conninfo (e.g. \"host=/tmp port=5432 dbname=x\")\n"
      "  --npcs N              simulated NPCs, one outstanding decision each (default 50)\n"
      "  --pool N              connections used to enqueue, 1-16 (default 8)\n"
      "  --think-ms M          mean think time, exponentially distributed (default 2000)\n"
      "  --seed N              seed of the think times (default 1)\n"
      "  --duration S          measured seconds after warm-up; 0 = until SIGINT/SIGTERM (default 0)\n"
      "  --warmup S            seconds not measured at the start (default 5)\n"
      "  --service-ms X        the GPU's fixed service time, subtracted to report overhead\n"
      "  --priority-mix        NPC i uses priority i %% 11 (default: all priority 5)\n"
      "  --dashboard           live block every second (one line per second when not a tty)\n"
      "  --report FILE         append a one-line JSON summary to FILE\n"
      "  --enqueue-function F  call F(npc_id, decision_type, prompt, priority, params) instead of\n"
      "                        npc_scale.request_decision (the overhead benchmark's baseline)\n"
      "  --rss-pid-of-dispatcher  print the dispatcher's RssAnon, private memory, PSS and VmRSS at the end\n"
      "  --grace S             wait this long for outstanding decisions at the end (default 10)\n"
      "exit status: 0, or 1 if a database error occurred, 2 on bad usage\n");
}

bool parse_double(const char* s, double& out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !std::isfinite(v)) return false;
  out = v;
  return true;
}
bool parse_int(const char* s, long long& out) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  out = v;
  return true;
}

bool parse_options(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    std::string val;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      auto eq = a.find('=');
      if (eq != std::string::npos) {
        val = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    auto need = [&](const char* name) -> const char* {
      if (has_inline) return val.c_str();
      if (i + 1 >= argc) {
        std::fprintf(stderr, "npc_load: %s needs a value\n", name);
        return nullptr;
      }
      return argv[++i];
    };
    auto bad = [&](const char* name, const char* v) {
      std::fprintf(stderr, "npc_load: bad value for %s: '%s'\n", name, v);
      return false;
    };
    long long n = 0;
    double d = 0;
    const char* v = nullptr;
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--conninfo") {
      if (!(v = need("--conninfo"))) return false;
      o.conninfo = v;
    } else if (a == "--npcs") {
      if (!(v = need("--npcs"))) return false;
      if (!parse_int(v, n) || n < 1 || n > 1000000) return bad("--npcs", v);
      o.npcs = static_cast<int>(n);
    } else if (a == "--pool") {
      if (!(v = need("--pool"))) return false;
      if (!parse_int(v, n) || n < 1 || n > 16) return bad("--pool (1-16)", v);
      o.pool = static_cast<int>(n);
    } else if (a == "--think-ms") {
      if (!(v = need("--think-ms"))) return false;
      if (!parse_double(v, d) || d < 0) return bad("--think-ms", v);
      o.think_ms = d;
    } else if (a == "--seed") {
      if (!(v = need("--seed"))) return false;
      if (!parse_int(v, n)) return bad("--seed", v);
      o.seed = static_cast<uint64_t>(n);
    } else if (a == "--duration") {
      if (!(v = need("--duration"))) return false;
      if (!parse_double(v, d) || d < 0) return bad("--duration", v);
      o.duration_s = d;
      o.duration_given = d > 0;
    } else if (a == "--warmup") {
      if (!(v = need("--warmup"))) return false;
      if (!parse_double(v, d) || d < 0) return bad("--warmup", v);
      o.warmup_s = d;
    } else if (a == "--service-ms") {
      if (!(v = need("--service-ms"))) return false;
      if (!parse_double(v, d) || d < 0) return bad("--service-ms", v);
      o.service_ms = d;
      o.service_given = true;
    } else if (a == "--grace") {
      if (!(v = need("--grace"))) return false;
      if (!parse_double(v, d) || d < 0) return bad("--grace", v);
      o.grace_s = d;
    } else if (a == "--report") {
      if (!(v = need("--report"))) return false;
      o.report = v;
    } else if (a == "--enqueue-function") {
      if (!(v = need("--enqueue-function"))) return false;
      std::string f = v;
      bool ok = !f.empty() && f.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.") == std::string::npos;
      if (!ok) return bad("--enqueue-function (a lower-case schema.function name)", v);
      o.enqueue_function = f;
    } else if (a == "--repeat") {
      if (!(v = need("--repeat"))) return false;
      if (!parse_int(v, n) || n < 1) return bad("--repeat", v);
      o.repeat = n;
    } else if (a == "--priority-mix") {
      o.priority_mix = true;
    } else if (a == "--dashboard") {
      o.dashboard = true;
    } else if (a == "--rss-pid-of-dispatcher") {
      o.rss = true;
    } else {
      std::fprintf(stderr, "npc_load: unknown option '%s'\n", argv[i]);
      usage(stderr);
      return false;
    }
  }
  if (o.conninfo.empty()) {
    std::fprintf(stderr, "npc_load: --conninfo is required\n");
    usage(stderr);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------- random ---
// splitmix64: one small state per NPC, so each NPC's think times depend on
// the seed and its index only, not on the order events happen in.
uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
double uniform01(uint64_t& s) {  // [0, 1)
  return static_cast<double>(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
}
double exponential_ms(uint64_t& s, double mean) {
  if (mean <= 0) return 0;
  return -mean * std::log1p(-uniform01(s));
}

// ------------------------------------------------------------- statistics --
// Log-linear histogram (HDR style, 64 sub-buckets per power of two, < 1.6 %
// error) of latencies in microseconds, for the dashboard's running figures:
// O(buckets) per refresh whatever the run length.
class Histogram {
 public:
  Histogram() : counts_(kBuckets, 0) {}
  void add(double ms) {
    double us = ms * 1000.0;
    uint64_t v = us <= 0 ? 0 : static_cast<uint64_t>(us);
    counts_[index_of(v)]++;
    total_++;
  }
  uint64_t total() const { return total_; }
  double percentile_ms(double p) const {
    if (total_ == 0) return NAN;
    uint64_t rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; i++) {
      seen += counts_[i];
      if (seen >= rank) return mid_of(i) / 1000.0;
    }
    return mid_of(kBuckets - 1) / 1000.0;
  }

 private:
  static constexpr int kSub = 7;  // 128 exact values below 128 us
  static constexpr int kBuckets = 64 * 64;
  static int index_of(uint64_t v) {
    if (v < (1u << kSub)) return static_cast<int>(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (kSub - 1);
    int idx = shift * 64 + static_cast<int>(v >> shift);
    return std::min(idx, kBuckets - 1);
  }
  static double mid_of(int idx) {
    if (idx < (1 << kSub)) return idx;
    int shift = idx / 64 - 1;
    uint64_t lo = static_cast<uint64_t>(idx % 64 + 64) << shift;
    uint64_t width = 1ULL << shift;
    return static_cast<double>(lo) + static_cast<double>(width - 1) / 2.0;
  }
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
};

// Exact percentile (nearest rank) of a sorted vector.
double pct_sorted(const std::vector<double>& v, double p) {
  if (v.empty()) return NAN;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  if (rank < 1) rank = 1;
  if (rank > v.size()) rank = v.size();
  return v[rank - 1];
}
double pct_unsorted(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  if (rank < 1) rank = 1;
  if (rank > v.size()) rank = v.size();
  std::nth_element(v.begin(), v.begin() + static_cast<long>(rank - 1), v.end());
  return v[rank - 1];
}

std::string fmt_ms(double v) {
  if (std::isnan(v)) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}
std::string json_num(double v, int prec = 3) {
  if (std::isnan(v) || !std::isfinite(v)) return "null";
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}
std::string json_str(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// ------------------------------------------------------------------ state --
enum class NpcState { thinking, waiting_conn, enqueuing, awaiting_answer, stopped };

struct Npc {
  int index = 0;
  int priority = 5;
  uint64_t rng = 0;
  long step = 0;
  NpcState state = NpcState::thinking;
  TimePoint issued{};       // when the request call was issued (end of think)
  int64_t decision_id = 0;  // once the INSERT's result is known
  bool measured = false;    // issued inside the measured window
};

struct PoolConn {
  PGconn* conn = nullptr;
  int npc = -1;           // NPC whose query is on this connection, -1 = free
  bool flushing = false;  // PQflush() returned 1: wait for POLLOUT too
  bool broken = false;
};

struct Timer {
  TimePoint at;
  uint64_t seq;
  int npc;  // >= 0: NPC think time ends; < 0: a global event (see kTimer*)
  bool operator>(const Timer& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};
constexpr int kTimerTick = -1;        // dashboard / housekeeping, every second
constexpr int kTimerWarmupEnd = -2;
constexpr int kTimerMeasureEnd = -3;
constexpr int kTimerGraceEnd = -4;

volatile sig_atomic_t g_signals = 0;
void on_signal(int) { g_signals = g_signals + 1; }

// Prepared once per pool connection, as a game server's driver would.
const char* kEnqueueStatement = "npc_load_enqueue";
std::string enqueue_sql(const std::string& function) {
  return "SELECT " + function +
         "($1::bigint, 'build', $2::text, $3::int, '{\"max_tokens\": 8, \"temperature\": 0}'::jsonb)";
}

class Load {
 public:
  explicit Load(const Options& o) : o_(o) {}
  int run();

 private:
  // setup / teardown
  PGconn* connect_one(const char* what);
  bool setup();
  void finish_connections();
  // event loop
  void schedule(TimePoint at, int npc);
  void start_thinking(int npc, TimePoint from);
  void issue(int npc, TimePoint now);
  void dispatch_waiting();
  bool send_on(int conn_idx, int npc);
  void on_pool_event(int conn_idx, short revents);
  void on_enqueue_result(int npc, PGresult* res);
  void on_listen_event();
  void answered(int npc, TimePoint at);
  void on_monitor_event();
  void tick(TimePoint now);
  void begin_measuring(TimePoint now);
  void end_measuring(TimePoint now);
  void db_error(const std::string& what);
  std::string prompt_for(const Npc& n) const;
  int outstanding() const;
  // results
  void final_queries();
  void read_rss();
  void print_summary();
  void write_report();

  const Options& o_;
  std::vector<Npc> npcs_;
  std::vector<PoolConn> pool_;
  PGconn* listen_ = nullptr;
  PGconn* monitor_ = nullptr;  // dashboard queue depth, final queries
  std::string fleet_line_;     // dashboard: per-GPU load, breaker, latency; cache and affinity
  bool monitor_busy_ = false;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t timer_seq_ = 0;
  std::deque<int> waiting_;  // NPCs whose request waits for a free pool connection
  std::unordered_map<int64_t, int> by_id_;            // decision id -> NPC
  std::unordered_map<int64_t, TimePoint> early_;      // notified before the INSERT result was seen
  uint64_t foreign_notifies_ = 0;                     // ids never ours (pruned from early_)
  uint64_t races_ = 0;                                // notification processed before the id
  bool stopped_in_warmup_ = false;
  std::string run_tag_;

  // phases
  TimePoint start_{}, measure_start_{}, measure_end_{}, grace_end_{};
  bool measuring_ = false;
  bool measured_done_ = false;  // the measured window is over: no new requests
  bool stop_loop_ = false;
  bool fatal_ = false;
  bool had_db_error_ = false;
  std::string first_error_;
  int handled_signals_ = 0;

  // counters
  uint64_t done_total_ = 0, errors_total_ = 0, sent_total_ = 0;
  uint64_t done_measured_ = 0, errors_measured_ = 0;
  std::vector<double> lat_measured_;       // ms, measured window only
  std::vector<double> enq_measured_;       // ms, issue -> request_decision() result (incl. local wait)
  std::vector<std::vector<double>> lat_by_prio_;
  std::vector<int64_t> ids_measured_done_;
  std::vector<int64_t> ids_lost_;
  uint64_t lost_unsent_ = 0;
  Histogram hist_all_;                     // every answered decision, for the dashboard
  std::vector<double> lat_last_second_;
  uint64_t done_at_last_tick_ = 0;
  TimePoint last_tick_{};
  long queue_queued_ = -1, queue_running_ = -1;
  uint64_t max_local_wait_ = 0;

  // final figures
  std::vector<std::pair<std::string, long>> status_done_, status_lost_;
  long not_done_ = 0;  // notified, but the row is failed / expired / cancelled
  // Decisions of the measured window answered and done (the notified ones
  // whose row is not failed / expired / cancelled).
  uint64_t done_ok() const {
    return done_measured_ - std::min<uint64_t>(done_measured_, static_cast<uint64_t>(not_done_));
  }
  long queue_failed_ = -1;  // dashboard: failed / expired / cancelled rows (queue_stats)
  int dispatcher_pid_ = 0;
  double vmrss_mb_ = NAN, rssanon_mb_ = NAN, rssshmem_mb_ = NAN, pss_mb_ = NAN, private_mb_ = NAN;
  std::string rss_note_;
  double measured_s_ = 0;
};

// ------------------------------------------------------------------ setup --
PGconn* Load::connect_one(const char* what) {
  PGconn* c = PQconnectdb(o_.conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::fprintf(stderr, "npc_load: %s connection failed: %s", what, PQerrorMessage(c));
    PQfinish(c);
    return nullptr;
  }
  return c;
}

bool Load::setup() {
  listen_ = connect_one("LISTEN");
  if (!listen_) return false;
  PGresult* r = PQexec(listen_, "LISTEN npc_scale_decisions");
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) std::fprintf(stderr, "npc_load: LISTEN failed: %s", PQresultErrorMessage(r));
  PQclear(r);
  if (!ok) return false;
  // The extension must be there: a clear message beats 500 identical errors.
  r = PQexec(listen_, "SELECT 1 FROM pg_extension WHERE extname = 'npc_scale'");
  ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  PQclear(r);
  if (!ok) {
    std::fprintf(stderr, "npc_load: extension npc_scale is not installed in this database\n");
    return false;
  }
  if (PQsetnonblocking(listen_, 1) != 0) return false;

  monitor_ = connect_one("monitor");
  if (!monitor_) return false;
  PQsetnonblocking(monitor_, 1);

  pool_.resize(static_cast<size_t>(o_.pool));
  for (auto& p : pool_) {
    p.conn = connect_one("pool");
    if (!p.conn) return false;
    PGresult* prep = PQprepare(p.conn, kEnqueueStatement, enqueue_sql(o_.enqueue_function).c_str(), 0, nullptr);
    bool prepared = PQresultStatus(prep) == PGRES_COMMAND_OK;
    if (!prepared) std::fprintf(stderr, "npc_load: PREPARE failed: %s", PQresultErrorMessage(prep));
    PQclear(prep);
    if (!prepared) return false;
    if (PQsetnonblocking(p.conn, 1) != 0) {
      std::fprintf(stderr, "npc_load: PQsetnonblocking failed: %s", PQerrorMessage(p.conn));
      return false;
    }
  }
  return true;
}

void Load::finish_connections() {
  for (auto& p : pool_)
    if (p.conn) PQfinish(p.conn), p.conn = nullptr;
  if (listen_) PQfinish(listen_), listen_ = nullptr;
  if (monitor_) PQfinish(monitor_), monitor_ = nullptr;
}

// ------------------------------------------------------------------- NPCs --
std::string Load::prompt_for(const Npc& n) const {
  // Resources vary by NPC and step; the first 64 bytes (the fake GPU's prefix
  // cache key) hold the run tag, NPC and step, so no run hits the cache of a
  // previous one and every prompt costs the full service time.
  // With --repeat K an NPC asks the same K questions in turn: the cache's case.
  const long step = o_.repeat > 0 ? n.step % o_.repeat : n.step;
  uint64_t s = o_.seed * 0x100000001B3ULL ^ (static_cast<uint64_t>(n.index) << 32) ^
               static_cast<uint64_t>(step);
  auto res = [&](int base) { return base + static_cast<int>(splitmix64(s) % 400); };
  char b[256];
  std::snprintf(b, sizeof b,
                "NPC %d step %ld (run %s): village has %d wood, %d clay, %d iron, %d wheat. "
                "What to build?",
                n.index, step, run_tag_.c_str(), res(50), res(50), res(50), res(100));
  return b;
}

void Load::schedule(TimePoint at, int npc) { timers_.push(Timer{at, timer_seq_++, npc}); }

void Load::start_thinking(int npc, TimePoint from) {
  Npc& n = npcs_[static_cast<size_t>(npc)];
  n.decision_id = 0;
  if (measured_done_ || stop_loop_) {
    n.state = NpcState::stopped;
    return;
  }
  n.state = NpcState::thinking;
  schedule(after_ms(from, exponential_ms(n.rng, o_.think_ms)), npc);
}

void Load::issue(int npc, TimePoint now) {
  Npc& n = npcs_[static_cast<size_t>(npc)];
  n.issued = now;
  n.measured = measuring_;
  n.state = NpcState::waiting_conn;
  waiting_.push_back(npc);
  dispatch_waiting();
}

void Load::dispatch_waiting() {
  for (size_t i = 0; i < pool_.size() && !waiting_.empty(); i++) {
    if (pool_[i].broken || pool_[i].npc >= 0) continue;
    int npc = waiting_.front();
    waiting_.pop_front();
    if (!send_on(static_cast<int>(i), npc)) {
      // The connection is broken (send_on marked it): try the next one.
      waiting_.push_front(npc);
    }
  }
}

bool Load::send_on(int ci, int npc) {
  PoolConn& p = pool_[static_cast<size_t>(ci)];
  Npc& n = npcs_[static_cast<size_t>(npc)];
  std::string id = std::to_string(n.index);
  std::string prompt = prompt_for(n);
  std::string prio = std::to_string(n.priority);
  const char* values[3] = {id.c_str(), prompt.c_str(), prio.c_str()};
  if (!PQsendQueryPrepared(p.conn, kEnqueueStatement, 3, values, nullptr, nullptr, 0)) {
    db_error(std::string("PQsendQueryPrepared: ") + PQerrorMessage(p.conn));
    if (PQstatus(p.conn) == CONNECTION_BAD) p.broken = true;
    return false;
  }
  int f = PQflush(p.conn);
  if (f < 0) {
    db_error(std::string("PQflush: ") + PQerrorMessage(p.conn));
    p.broken = true;
    return false;
  }
  p.flushing = f == 1;
  p.npc = npc;
  n.state = NpcState::enqueuing;
  n.step++;
  sent_total_++;
  return true;
}

void Load::on_pool_event(int ci, short revents) {
  PoolConn& p = pool_[static_cast<size_t>(ci)];
  if (p.broken) return;
  if (revents & (POLLIN | POLLERR | POLLHUP)) {
    if (!PQconsumeInput(p.conn)) {
      db_error(std::string("pool connection: ") + PQerrorMessage(p.conn));
      p.broken = true;
    }
  }
  if (!p.broken && p.flushing) {
    int f = PQflush(p.conn);
    if (f < 0) {
      db_error(std::string("PQflush: ") + PQerrorMessage(p.conn));
      p.broken = true;
    } else {
      p.flushing = f == 1;
    }
  }
  if (p.broken) {
    if (p.npc >= 0) {
      int npc = p.npc;
      p.npc = -1;
      on_enqueue_result(npc, nullptr);
    }
    bool any = false;
    for (auto& q : pool_) any = any || !q.broken;
    if (!any) {
      std::fprintf(stderr, "npc_load: every pool connection is broken, stopping\n");
      fatal_ = stop_loop_ = true;
    }
    return;
  }
  while (p.npc >= 0 && !PQisBusy(p.conn)) {
    PGresult* r = PQgetResult(p.conn);
    if (r == nullptr) {  // the query is complete: the connection is free
      p.npc = -1;
      break;
    }
    on_enqueue_result(p.npc, r);
    PQclear(r);
  }
  if (p.npc < 0) dispatch_waiting();
}

void Load::on_enqueue_result(int npc, PGresult* res) {
  Npc& n = npcs_[static_cast<size_t>(npc)];
  if (n.state != NpcState::enqueuing) return;  // already handled (e.g. an error result)
  if (res == nullptr || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
      PQgetisnull(res, 0, 0)) {
    std::string msg = res ? PQresultErrorMessage(res) : "connection lost";
    if (msg.empty() && res) msg = std::string("unexpected result ") + PQresStatus(PQresultStatus(res));
    db_error("request_decision: " + msg);
    errors_total_++;
    if (n.measured) errors_measured_++;
    // The NPC gives up on this decision and thinks again.
    start_thinking(npc, Clock::now());
    return;
  }
  int64_t id = std::strtoll(PQgetvalue(res, 0, 0), nullptr, 10);
  n.decision_id = id;
  if (n.measured) enq_measured_.push_back(ms_between(n.issued, Clock::now()));
  n.state = NpcState::awaiting_answer;
  auto e = early_.find(id);
  if (e != early_.end()) {  // the notification won the race
    TimePoint at = e->second;
    early_.erase(e);
    races_++;
    answered(npc, at);
    return;
  }
  by_id_[id] = npc;
}

void Load::on_listen_event() {
  TimePoint now = Clock::now();
  if (!PQconsumeInput(listen_)) {
    db_error(std::string("LISTEN connection: ") + PQerrorMessage(listen_));
    std::fprintf(stderr, "npc_load: lost the LISTEN connection, stopping\n");
    fatal_ = stop_loop_ = true;
    return;
  }
  while (PGnotify* nt = PQnotifies(listen_)) {
    char* end = nullptr;
    long long id = std::strtoll(nt->extra, &end, 10);
    bool valid = end != nt->extra;
    PQfreemem(nt);
    if (!valid) continue;
    auto it = by_id_.find(id);
    if (it != by_id_.end()) {
      int npc = it->second;
      by_id_.erase(it);
      answered(npc, now);
    } else {
      early_.emplace(id, now);  // an INSERT result still to come, or someone else's decision
    }
  }
}

void Load::answered(int npc, TimePoint at) {
  Npc& n = npcs_[static_cast<size_t>(npc)];
  double ms = ms_between(n.issued, at);
  done_total_++;
  hist_all_.add(ms);
  lat_last_second_.push_back(ms);
  if (n.measured) {
    done_measured_++;
    lat_measured_.push_back(ms);
    lat_by_prio_[static_cast<size_t>(n.priority)].push_back(ms);
    ids_measured_done_.push_back(n.decision_id);
  }
  start_thinking(npc, at);
}

int Load::outstanding() const {
  int c = 0;
  for (const auto& n : npcs_)
    if (n.state == NpcState::waiting_conn || n.state == NpcState::enqueuing ||
        n.state == NpcState::awaiting_answer)
      c++;
  return c;
}
void Load::db_error(const std::string& what) {
  had_db_error_ = true;
  if (first_error_.empty()) {
    first_error_ = what;
    while (!first_error_.empty() && (first_error_.back() == '\n' || first_error_.back() == ' '))
      first_error_.pop_back();
  }
  static int printed = 0;
  if (printed < 5) {
    std::fprintf(stderr, "npc_load: database error: %s%s", what.c_str(),
                 (!what.empty() && what.back() == '\n') ? "" : "\n");
    if (++printed == 5) std::fprintf(stderr, "npc_load: (further errors are only counted)\n");
  }
}

// -------------------------------------------------------------- dashboard --
void Load::on_monitor_event() {
  if (!monitor_busy_) return;
  if (!PQconsumeInput(monitor_)) {
    monitor_busy_ = false;
    return;
  }
  while (!PQisBusy(monitor_)) {
    PGresult* r = PQgetResult(monitor_);
    if (!r) {
      monitor_busy_ = false;
      break;
    }
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      queue_queued_ = std::strtol(PQgetvalue(r, 0, 0), nullptr, 10);
      queue_running_ = std::strtol(PQgetvalue(r, 0, 1), nullptr, 10);
      queue_failed_ = std::strtol(PQgetvalue(r, 0, 2), nullptr, 10);
      fleet_line_ = PQgetvalue(r, 0, 3);
    }
    PQclear(r);
  }
}

void Load::tick(TimePoint now) {
  // Notifications of ids that never became ours (other clients): forget them.
  if (!early_.empty()) {
    for (auto it = early_.begin(); it != early_.end();) {
      if (ms_between(it->second, now) > 60000) {
        foreign_notifies_++;
        it = early_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (o_.dashboard) {
    double elapsed = ms_between(start_, now) / 1000.0;
    double interval_s = ms_between(last_tick_, now) / 1000.0;
    double rate = interval_s > 0 ? static_cast<double>(done_total_ - done_at_last_tick_) / interval_s : 0;
    double p50_1s = pct_unsorted(lat_last_second_, 50), p99_1s = pct_unsorted(lat_last_second_, 99);
    double p50 = hist_all_.percentile_ms(50), p99 = hist_all_.percentile_ms(99);
    const char* phase = measured_done_ ? "draining" : measuring_ ? "measuring" : "warm-up";
    std::string q = queue_queued_ < 0 ? "-" : std::to_string(queue_queued_);
    std::string rn = queue_running_ < 0 ? "-" : std::to_string(queue_running_);
    std::string fl = queue_failed_ < 0 ? "-" : std::to_string(queue_failed_);
    int infl = outstanding();
    if (isatty(STDOUT_FILENO)) {
      std::printf("\x1b[H\x1b[2J");
      std::printf("npc_load  %d NPCs  pool %d  think %.0f ms  [%s]\n\n", o_.npcs, o_.pool, o_.think_ms,
                  phase);
      std::printf("  elapsed        %8.1f s\n", elapsed);
      std::printf("  answered       %8" PRIu64 "   enqueue errors %" PRIu64 "\n", done_total_, errors_total_);
      std::printf("  rate           %8.1f /s\n", rate);
      std::printf("  latency ms     last 1 s: p50 %7s  p99 %7s\n", fmt_ms(p50_1s).c_str(),
                  fmt_ms(p99_1s).c_str());
      std::printf("                 overall:  p50 %7s  p99 %7s\n", fmt_ms(p50).c_str(), fmt_ms(p99).c_str());
      std::printf("  queue          %8s queued, %s running, %s failed/expired/cancelled (npc_scale.queue_stats)\n",
                  q.c_str(), rn.c_str(), fl.c_str());
      std::printf("  in flight      %8d   waiting for a pool connection %zu\n", infl, waiting_.size());
      if (!fleet_line_.empty()) std::printf("  fleet          %s\n", fleet_line_.c_str());
    } else {
      std::printf("t=%.1fs %s answered=%" PRIu64 " rate=%.1f/s p50_1s=%s p99_1s=%s p50=%s p99=%s "
                  "queued=%s running=%s failed=%s inflight=%d enqueue_errors=%" PRIu64 " %s\n",
                  elapsed, phase, done_total_, rate, fmt_ms(p50_1s).c_str(), fmt_ms(p99_1s).c_str(),
                  fmt_ms(p50).c_str(), fmt_ms(p99).c_str(), q.c_str(), rn.c_str(), fl.c_str(), infl,
                  errors_total_, fleet_line_.c_str());
    }
    std::fflush(stdout);
    // Next refresh's queue depth, asynchronously on its own connection.
    if (!monitor_busy_ && monitor_) {
      if (PQsendQuery(monitor_,
                      "SELECT coalesce(sum(decisions) FILTER (WHERE status = 'queued'), 0), "
                      "coalesce(sum(decisions) FILTER (WHERE status = 'running'), 0), "
                      "coalesce(sum(decisions) FILTER (WHERE status IN ('failed', 'expired', 'cancelled')), 0), "
                      "(SELECT coalesce(string_agg(format('gpu%s %s/%s %s %sms', gpu_id, in_flight,"
                      "   max_concurrent, breaker, round(avg_latency_ms)), ' | ' ORDER BY gpu_id), '')"
                      "   FROM npc_scale.endpoint_stats)"
                      " || (SELECT format(' | affinity hits %s | cache hits %s', coalesce(a.hit_rate::text, '-'),"
                      "   coalesce(round(c.hit_rate::numeric, 2)::text, '-')) FROM npc_scale.affinity_stats a,"
                      "   npc_scale.cache_stats c) "
                      "FROM npc_scale.queue_stats")) {
        monitor_busy_ = true;
        PQflush(monitor_);
      }
    }
  }
  lat_last_second_.clear();
  done_at_last_tick_ = done_total_;
  last_tick_ = now;
}

void Load::begin_measuring(TimePoint now) {
  measuring_ = true;
  measure_start_ = now;
  if (o_.duration_given) {
    measure_end_ = after_ms(now, o_.duration_s * 1000.0);
    schedule(measure_end_, kTimerMeasureEnd);
  }
}

void Load::end_measuring(TimePoint now) {
  if (measured_done_) return;
  if (!measuring_) {  // stopped during warm-up: nothing measured
    measure_start_ = now;
    stopped_in_warmup_ = true;
  }
  measuring_ = false;
  measured_done_ = true;
  measure_end_ = now;
  grace_end_ = after_ms(now, o_.grace_s * 1000.0);
  schedule(grace_end_, kTimerGraceEnd);
  // Thinking NPCs stop; outstanding requests (queued locally or not) go on.
  for (auto& n : npcs_)
    if (n.state == NpcState::thinking) n.state = NpcState::stopped;
}

// ------------------------------------------------------------------- loop --
int Load::run() {
  // Signals are blocked except inside ppoll(): none is lost between checks.
  sigset_t block, orig;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &orig);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigset_t in_poll = orig;
  sigdelset(&in_poll, SIGINT);
  sigdelset(&in_poll, SIGTERM);

  if (!setup()) {
    finish_connections();
    return 1;
  }
  {
    char b[32];
    std::snprintf(b, sizeof b, "%lx-%x",
                  static_cast<unsigned long>(std::time(nullptr)) & 0xffffffUL,
                  static_cast<unsigned>(getpid()) & 0xffffu);
    run_tag_ = b;
  }

  npcs_.resize(static_cast<size_t>(o_.npcs));
  lat_by_prio_.resize(11);
  start_ = last_tick_ = Clock::now();
  for (int i = 0; i < o_.npcs; i++) {
    Npc& n = npcs_[static_cast<size_t>(i)];
    n.index = i;
    n.priority = o_.priority_mix ? i % 11 : 5;
    n.rng = o_.seed ^ (0xD1B54A32D192ED03ULL * static_cast<uint64_t>(i + 1));
    start_thinking(i, start_);  // the first think staggers the start
  }
  if (o_.warmup_s > 0)
    schedule(after_ms(start_, o_.warmup_s * 1000.0), kTimerWarmupEnd);
  else
    begin_measuring(start_);
  schedule(after_ms(start_, 1000.0), kTimerTick);

  std::vector<pollfd> fds;
  while (!stop_loop_) {
    // Signals: the first ends the measured window (then drain), a second stops now.
    while (handled_signals_ < g_signals) {
      handled_signals_++;
      TimePoint now = Clock::now();
      if (!measured_done_) {
        std::fprintf(stderr, "npc_load: signal: stopping, waiting up to %.0f s for outstanding decisions "
                     "(again to stop now)\n", o_.grace_s);
        end_measuring(now);
      } else {
        stop_loop_ = true;
      }
    }
    if (stop_loop_) break;

    // Due timers.
    TimePoint now = Clock::now();
    while (!timers_.empty() && timers_.top().at <= now) {
      Timer t = timers_.top();
      timers_.pop();
      if (t.npc >= 0) {
        Npc& n = npcs_[static_cast<size_t>(t.npc)];
        if (n.state == NpcState::thinking) issue(t.npc, now);
      } else if (t.npc == kTimerTick) {
        tick(now);
        schedule(after_ms(t.at, 1000.0), kTimerTick);
      } else if (t.npc == kTimerWarmupEnd) {
        if (!measured_done_) begin_measuring(now);
      } else if (t.npc == kTimerMeasureEnd) {
        end_measuring(now);
      } else if (t.npc == kTimerGraceEnd) {
        stop_loop_ = true;
      }
      now = Clock::now();
    }
    if (stop_loop_) break;
    if (measured_done_ && outstanding() == 0) break;  // all answered: no need to wait for the grace

    // Poll the listen socket first, so notifications are stamped first.
    fds.clear();
    fds.push_back(pollfd{PQsocket(listen_), POLLIN, 0});
    fds.push_back(pollfd{monitor_busy_ ? PQsocket(monitor_) : -1, POLLIN, 0});
    for (auto& p : pool_) {
      short ev = POLLIN;
      if (p.flushing) ev |= POLLOUT;
      fds.push_back(pollfd{p.broken ? -1 : PQsocket(p.conn), ev, 0});
    }
    timespec ts{1, 0};
    timespec* tsp = &ts;
    if (!timers_.empty()) {
      auto wait = timers_.top().at - Clock::now();
      if (wait < Clock::duration::zero()) wait = Clock::duration::zero();
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
      ts.tv_sec = static_cast<time_t>(ns / 1000000000);
      ts.tv_nsec = static_cast<long>(ns % 1000000000);
    } else {
      tsp = nullptr;
    }
    int rc = ppoll(fds.data(), fds.size(), tsp, &in_poll);
    if (rc < 0) {
      if (errno == EINTR) continue;
      std::perror("npc_load: ppoll");
      fatal_ = true;
      break;
    }
    if (rc == 0) continue;
    if (fds[0].revents) on_listen_event();
    if (stop_loop_) break;
    if (fds[1].revents) on_monitor_event();
    for (size_t i = 0; i < pool_.size(); i++)
      if (fds[i + 2].revents) on_pool_event(static_cast<int>(i), fds[i + 2].revents);
  }

  TimePoint end = Clock::now();
  if (!measured_done_) end_measuring(end);
  measured_s_ = measuring_ || measured_done_ ? ms_between(measure_start_, measure_end_) / 1000.0 : 0;
  if (measured_s_ < 0) measured_s_ = 0;

  // What is still outstanding from the measured window is lost.
  for (auto& n : npcs_) {
    if (!n.measured) continue;
    if (n.state == NpcState::awaiting_answer) ids_lost_.push_back(n.decision_id);
    else if (n.state == NpcState::waiting_conn || n.state == NpcState::enqueuing) lost_unsent_++;
  }
  // Results of queries still on the pool are not wanted any more.
  for (auto& p : pool_)
    if (p.conn) PQfinish(p.conn), p.conn = nullptr;
  if (o_.dashboard && isatty(STDOUT_FILENO)) std::printf("\n");

  if (!fatal_) final_queries();
  if (o_.rss) read_rss();
  print_summary();
  if (!o_.report.empty()) write_report();
  finish_connections();
  return (had_db_error_ || fatal_) ? 1 : 0;
}

// ---------------------------------------------------------------- results --
namespace {
std::string id_array(const std::vector<int64_t>& ids) {
  std::string s = "{";
  for (size_t i = 0; i < ids.size(); i++) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "}";
}
}  // namespace

void Load::final_queries() {
  if (!monitor_) return;
  // Drain a dashboard query still running, then go synchronous.
  while (monitor_busy_) {
    PGresult* r = PQgetResult(monitor_);
    if (!r) break;
    PQclear(r);
  }
  monitor_busy_ = false;
  PQsetnonblocking(monitor_, 0);
  auto status_counts = [&](const std::vector<int64_t>& ids, std::vector<std::pair<std::string, long>>& out) {
    if (ids.empty()) return;
    std::string arr = id_array(ids);
    const char* v[1] = {arr.c_str()};
    PGresult* r = PQexecParams(monitor_,
                               "SELECT status, count(*) FROM npc_scale.decision_queue "
                               "WHERE id = ANY($1::bigint[]) GROUP BY status ORDER BY status",
                               1, nullptr, v, nullptr, nullptr, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
      for (int i = 0; i < PQntuples(r); i++)
        out.emplace_back(PQgetvalue(r, i, 0), std::strtol(PQgetvalue(r, i, 1), nullptr, 10));
    } else {
      std::fprintf(stderr, "npc_load: status query failed: %s", PQresultErrorMessage(r));
    }
    PQclear(r);
  };
  status_counts(ids_measured_done_, status_done_);
  for (auto& [st, c] : status_done_)
    if (st != "done") not_done_ += c;
  status_counts(ids_lost_, status_lost_);
}

void Load::read_rss() {
  PGconn* c = monitor_ ? monitor_ : listen_;
  if (!c || PQstatus(c) != CONNECTION_OK) {
    rss_note_ = "no connection";
    return;
  }
  PQsetnonblocking(c, 0);
  PGresult* r = PQexec(c, "SELECT pid FROM npc_scale.worker_status() WHERE name LIKE '%dispatcher%' "
                          "AND pid IS NOT NULL");
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) >= 1)
    dispatcher_pid_ = static_cast<int>(std::strtol(PQgetvalue(r, 0, 0), nullptr, 10));
  else
    rss_note_ = PQresultStatus(r) == PGRES_TUPLES_OK ? "dispatcher not running" : PQresultErrorMessage(r);
  PQclear(r);
  if (dispatcher_pid_ <= 0) return;
  std::ifstream f("/proc/" + std::to_string(dispatcher_pid_) + "/status");
  if (!f) {
    rss_note_ = "cannot read /proc/" + std::to_string(dispatcher_pid_) +
                "/status (another host, or not allowed)";
    return;
  }
  // "Key:   123 kB" lines of /proc files: the value in MB, NAN for another key.
  std::string line;
  auto val = [&](const char* key) -> double {
    size_t kl = std::strlen(key);
    if (line.compare(0, kl, key) != 0) return NAN;
    return std::strtod(line.c_str() + kl, nullptr) / 1024.0;  // kB -> MB
  };
  while (std::getline(f, line)) {
    double v;
    if (!std::isnan(v = val("VmRSS:"))) vmrss_mb_ = v;
    if (!std::isnan(v = val("RssAnon:"))) rssanon_mb_ = v;
    if (!std::isnan(v = val("RssShmem:"))) rssshmem_mb_ = v;
  }
  // RssAnon: the process's own memory (heap, stack). PSS: shared pages
  // divided among the processes that map them. Private (Private_Clean +
  // Private_Dirty): pages no other process maps, which includes shared memory
  // only this process touched. VmRSS counts every shared page this process
  // ever touched in full (shared buffers, WAL buffers, the L1 cache, the
  // server's code), so it grows towards shared_buffers + cache_memory
  // although none of it is the dispatcher's own.
  std::ifstream rollup("/proc/" + std::to_string(dispatcher_pid_) + "/smaps_rollup");
  double clean = NAN, dirty = NAN;
  while (rollup && std::getline(rollup, line)) {
    double v;
    if (!std::isnan(v = val("Pss:"))) pss_mb_ = v;
    if (!std::isnan(v = val("Private_Clean:"))) clean = v;
    if (!std::isnan(v = val("Private_Dirty:"))) dirty = v;
  }
  private_mb_ = clean + dirty;  // NAN if either is missing
}

void Load::print_summary() {
  std::sort(lat_measured_.begin(), lat_measured_.end());
  const auto& L = lat_measured_;
  uint64_t lost = ids_lost_.size() + lost_unsent_;
  const uint64_t done = done_ok();
  double rate = measured_s_ > 0 ? static_cast<double>(done) / measured_s_ : 0;
  std::printf("npc_load: %d NPCs, pool %d, think %.0f ms, %.1f s measured (%s %.1f s warm-up)%s, via %s\n",
              o_.npcs, o_.pool, o_.think_ms, measured_s_, stopped_in_warmup_ ? "stopped during the" : "after",
              o_.warmup_s, o_.priority_mix ? ", priority mix" : "", o_.enqueue_function.c_str());
  std::printf("  decisions: %" PRIu64 " done (%.1f/s), %" PRIu64 " errors, %" PRIu64 " lost\n", done,
              rate, errors_measured_ + static_cast<uint64_t>(not_done_), lost);
  if (errors_measured_ || not_done_) {
    std::printf("    errors: %" PRIu64 " enqueue failures, %ld answered but not done", errors_measured_,
                not_done_);
    if (not_done_) {
      bool first = true;
      std::printf(" (");
      for (auto& [st, c] : status_done_)
        if (st != "done") std::printf("%s%s %ld", first ? "" : ", ", st.c_str(), c), first = false;
      std::printf(")");
    }
    std::printf("\n");
  }
  if (lost) {
    std::printf("    lost: %zu enqueued, never notified", ids_lost_.size());
    if (!status_lost_.empty()) {
      std::printf(" (now:");
      for (auto& [st, c] : status_lost_) std::printf(" %s %ld", st.c_str(), c);
      std::printf(")");
    }
    if (lost_unsent_) std::printf("; %" PRIu64 " never got their id", lost_unsent_);
    std::printf("\n");
  }
  if (!L.empty()) {
    std::printf("  end-to-end latency ms: p50 %s  p90 %s  p99 %s  max %s\n", fmt_ms(pct_sorted(L, 50)).c_str(),
                fmt_ms(pct_sorted(L, 90)).c_str(), fmt_ms(pct_sorted(L, 99)).c_str(), fmt_ms(L.back()).c_str());
    if (o_.service_given)
      std::printf("  overhead (minus %.1f ms GPU service) ms: p50 %s  p99 %s  (min %s)\n", o_.service_ms,
                  fmt_ms(pct_sorted(L, 50) - o_.service_ms).c_str(),
                  fmt_ms(pct_sorted(L, 99) - o_.service_ms).c_str(), fmt_ms(L.front() - o_.service_ms).c_str());
    if (!enq_measured_.empty()) {
      std::sort(enq_measured_.begin(), enq_measured_.end());
      std::printf("  of which enqueue (issue -> id, commit included) ms: p50 %s  p99 %s\n",
                  fmt_ms(pct_sorted(enq_measured_, 50)).c_str(), fmt_ms(pct_sorted(enq_measured_, 99)).c_str());
    }
    if (o_.priority_mix) {
      std::printf("  by priority (p50/p99 ms):");
      for (size_t p = 0; p < lat_by_prio_.size(); p++) {
        auto& v = lat_by_prio_[p];
        if (v.empty()) continue;
        std::sort(v.begin(), v.end());
        std::printf(" %zu:%s/%s", p, fmt_ms(pct_sorted(v, 50)).c_str(), fmt_ms(pct_sorted(v, 99)).c_str());
      }
      std::printf("\n");
    }
  } else {
    std::printf("  end-to-end latency ms: no measured decisions\n");
  }
  if (o_.rss) {
    if (dispatcher_pid_ > 0 && !std::isnan(vmrss_mb_))
      std::printf("  dispatcher pid %d: RssAnon %.1f MB (its own), private %.1f MB, PSS %.1f MB, VmRSS %.1f MB "
                  "(RssShmem %.1f MB: shared pages touched)\n",
                  dispatcher_pid_, rssanon_mb_, private_mb_, pss_mb_, vmrss_mb_, rssshmem_mb_);
    else
      std::printf("  dispatcher RSS: unknown (%s)\n", rss_note_.c_str());
  }
  std::printf("  notes: %" PRIu64 " sent, %" PRIu64 " answers seen before their id (race handled)",
              sent_total_, races_);
  if (foreign_notifies_) std::printf(", %" PRIu64 " notifications for others' decisions", foreign_notifies_);
  std::printf("\n");
  if (had_db_error_) std::printf("  database error: %s\n", first_error_.c_str());
  std::fflush(stdout);
}

void Load::write_report() {
  const auto& L = lat_measured_;  // sorted by print_summary
  uint64_t lost = ids_lost_.size() + lost_unsent_;
  const uint64_t done = done_ok();
  double rate = measured_s_ > 0 ? static_cast<double>(done) / measured_s_ : 0;
  double svc = o_.service_given ? o_.service_ms : NAN;
  std::ostringstream j;
  j << "{\"tool\":\"npc_load\",\"unix_time\":" << std::time(nullptr)
    << ",\"enqueue_function\":" << json_str(o_.enqueue_function) << ",\"npcs\":" << o_.npcs
    << ",\"pool\":" << o_.pool << ",\"think_ms\":" << json_num(o_.think_ms, 1) << ",\"seed\":" << o_.seed
    << ",\"warmup_s\":" << json_num(o_.warmup_s, 1) << ",\"measured_s\":" << json_num(measured_s_, 3)
    << ",\"priority_mix\":" << (o_.priority_mix ? "true" : "false") << ",\"done\":" << done
    << ",\"rate_per_s\":" << json_num(rate, 2) << ",\"errors\":" << (errors_measured_ + static_cast<uint64_t>(not_done_))
    << ",\"enqueue_errors\":" << errors_measured_ << ",\"not_done\":" << not_done_ << ",\"lost\":" << lost
    << ",\"p50_ms\":" << json_num(pct_sorted(L, 50)) << ",\"p90_ms\":" << json_num(pct_sorted(L, 90))
    << ",\"p99_ms\":" << json_num(pct_sorted(L, 99)) << ",\"max_ms\":" << json_num(L.empty() ? NAN : L.back())
    << ",\"service_ms\":" << json_num(svc)
    << ",\"overhead_p50_ms\":" << json_num(pct_sorted(L, 50) - svc)
    << ",\"overhead_p99_ms\":" << json_num(pct_sorted(L, 99) - svc)
    << ",\"enqueue_p50_ms\":" << json_num(pct_sorted(enq_measured_, 50))
    << ",\"enqueue_p99_ms\":" << json_num(pct_sorted(enq_measured_, 99))
    << ",\"dispatcher_vmrss_mb\":" << json_num(vmrss_mb_, 1)
    << ",\"dispatcher_rssanon_mb\":" << json_num(rssanon_mb_, 1)
    << ",\"dispatcher_rssshmem_mb\":" << json_num(rssshmem_mb_, 1)
    << ",\"dispatcher_pss_mb\":" << json_num(pss_mb_, 1)
    << ",\"dispatcher_private_mb\":" << json_num(private_mb_, 1)
    << ",\"races\":" << races_
    << ",\"db_error\":" << (had_db_error_ ? json_str(first_error_) : "null") << "}\n";
  FILE* f = std::fopen(o_.report.c_str(), "a");
  if (!f) {
    std::fprintf(stderr, "npc_load: cannot open %s: %s\n", o_.report.c_str(), std::strerror(errno));
    return;
  }
  std::fputs(j.str().c_str(), f);
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse_options(argc, argv, o)) return 2;
  Load load(o);
  return load.run();
}
