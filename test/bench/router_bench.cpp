// router_bench: the GPU router against a fleet of simulated GPUs (build/fake_gpu).
//
// One thread, one event loop: ppoll on HttpClient's epoll descriptor with a
// nanosecond timeout (the next Poisson arrival, the next phase boundary or
// libcurl's timer), then perform() and take_finished(). Open-loop arrivals:
// a request's latency runs from its *scheduled* arrival time, so a stalled
// client or a local queue shows up in the figures (no coordinated omission).
//
// Policies:
//   router       Router::pick with affinity (NPC id as key). Caps respected:
//                nullopt -> local priority queue (lower first, FIFO within),
//                dispatched when a slot frees, as the extension's dispatcher.
//   router-noaff Router::pick with RouterConfig::affinity = false.
//   round-robin  Router::pick_round_robin, caps ignored (the GPU queues).
//   seed         Router::pick_seed_as_written, caps ignored, load never counted.
//
// Measured first: each GPU's unloaded service time (sequential requests, cold
// and warm prompt prefix) and the fleet's capacity (each GPU alone, saturated
// at its cap, closed loop, the benchmark's own prompt mix; summed).
//
// Build (from the repository root), one line:
//   g++ -std=c++17 -O2 -g -Wall -Wextra -Isrc -Isrc/core test/bench/router_bench.cpp
//     src/core/router.cpp src/core/consistent_hash.cpp src/core/latency_stats.cpp
//     src/core/circuit_breaker.cpp src/core/http_client.cpp src/core/generation.cpp
//     src/core/error.cpp -lcurl -lxxhash -lpthread -o build/router_bench
// See test/bench/README.md ("router_bench") for options and the table.

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <set>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <xxhash.h>

#include "consistent_hash.hpp"
#include "generation.hpp"
#include "http_client.hpp"
#include "router.hpp"

using namespace npc_scale;

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t now_ms() { return now_ns() / 1000000; }
constexpr int64_t kSec = 1000000000;

// ---------------------------------------------------------------- options

struct Gpu {
  std::string name, url;
  int cap = 1;
};

struct Options {
  std::vector<Gpu> gpus;
  std::string model = "npc-llm";
  int npcs = 2000;
  int max_tokens = 16;
  double warmup_s = 3, measure_s = 10;
  double first_warmup_s = 6;  // extra warm-up before a policy's first window
  std::vector<double> loads{0.4, 0.8, 1.0, 1.2};
  std::vector<std::string> policies{"router", "router-noaff", "round-robin", "seed"};
  int service_n = 30;
  double capacity_s = 3;
  double capacity_rps = 0;  // > 0: skip the capacity measurement
  uint64_t seed = 1;
  long timeout_ms = 60000;
  std::string tsv;
  double epsilon = -1;  // < 0: RouterConfig's default
  double urgent_reserve = -1;   // < 0: RouterConfig's default
  int64_t reserve_wait_ms = -1;
  int prefix_cache = 1024;  // per GPU; must equal the fake GPUs' --prefix-cache-entries
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "router_bench: %s\n"
               "usage: router_bench --gpu NAME=URL,CAP [--gpu ...] [--model M] [--npcs N]\n"
               "  [--max-tokens N] [--warmup S] [--first-warmup S] [--measure S] [--loads 0.4,0.8,1.0,1.2]\n"
               "  [--policies router,router-noaff,round-robin,seed] [--service-n N]\n"
               "  [--capacity-s S] [--capacity-rps R] [--seed N] [--timeout-ms MS] [--tsv FILE]\n"
               "  [--epsilon E] [--prefix-cache N (the fake GPUs' --prefix-cache-entries, 1024)]\n"
               "  [--urgent-reserve F] [--reserve-wait-ms MS] (RouterConfig's defaults: 0.2, 50)\n",
               why);
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--gpu") {
      std::string v = val();
      size_t eq = v.find('='), comma = v.rfind(',');
      if (eq == std::string::npos || comma == std::string::npos || comma < eq)
        usage("--gpu wants NAME=URL,CAP");
      Gpu g{v.substr(0, eq), v.substr(eq + 1, comma - eq - 1), std::atoi(v.c_str() + comma + 1)};
      if (g.cap < 1) usage("cap must be >= 1");
      o.gpus.push_back(g);
    } else if (a == "--model") o.model = val();
    else if (a == "--npcs") o.npcs = std::atoi(val().c_str());
    else if (a == "--max-tokens") o.max_tokens = std::atoi(val().c_str());
    else if (a == "--warmup") o.warmup_s = std::atof(val().c_str());
    else if (a == "--measure") o.measure_s = std::atof(val().c_str());
    else if (a == "--first-warmup") o.first_warmup_s = std::atof(val().c_str());
    else if (a == "--loads") {
      o.loads.clear();
      for (auto& s : split(val(), ',')) o.loads.push_back(std::atof(s.c_str()));
    } else if (a == "--policies") o.policies = split(val(), ',');
    else if (a == "--service-n") o.service_n = std::atoi(val().c_str());
    else if (a == "--capacity-s") o.capacity_s = std::atof(val().c_str());
    else if (a == "--epsilon") o.epsilon = std::atof(val().c_str());
    else if (a == "--urgent-reserve") o.urgent_reserve = std::atof(val().c_str());
    else if (a == "--reserve-wait-ms") o.reserve_wait_ms = std::atoll(val().c_str());
    else if (a == "--capacity-rps") o.capacity_rps = std::atof(val().c_str());
    else if (a == "--seed") o.seed = std::strtoull(val().c_str(), nullptr, 10);
    else if (a == "--timeout-ms") o.timeout_ms = std::atol(val().c_str());
    else if (a == "--tsv") o.tsv = val();
    else if (a == "--prefix-cache") o.prefix_cache = std::atoi(val().c_str());
    else if (a == "-h" || a == "--help") usage("help");
    else usage(("unknown option " + a).c_str());
  }
  if (o.gpus.empty()) usage("at least one --gpu");
  if (o.npcs < 1 || o.max_tokens < 1 || o.measure_s <= 0 || o.warmup_s < 0 || o.first_warmup_s < 0 ||
      o.loads.empty() || o.prefix_cache < 0)
    usage("bad --npcs/--max-tokens/--measure/--warmup/--loads/--prefix-cache");
  for (auto& p : o.policies)
    if (p != "router" && p != "router-noaff" && p != "round-robin" && p != "seed")
      usage(("unknown policy " + p).c_str());
  return o;
}

// ---------------------------------------------------------------- workload

const char* kPersonas[] = {
    "a weathered blacksmith of Eastwatch who speaks tersely",
    "a nervous apprentice alchemist who fears the guild",
    "an old fisherman who trades rumours for coin",
    "a city guard captain loyal to the duke, suspicious of strangers",
    "a travelling bard who exaggerates every tale",
    "a herbalist living at the edge of the marsh",
    "a retired mercenary running the Broken Oar tavern",
    "a temple acolyte keeping the archive of the old kings",
};
const char* kSituations[] = {
    "the player asks for directions to the mine",
    "a wolf howls outside the palisade",
    "the player offers a silver ring in trade",
    "rain begins to fall on the market square",
    "a stranger in a grey cloak watches from the corner",
    "the player draws a sword",
    "the bell of the watchtower rings twice",
    "the player asks about the missing caravan",
};

// NPC-specific first 64+ bytes (the fake GPU hashes the first 64), with a run
// tag: one per policy (its windows share a warm cache, as a long-running
// fleet would), so no policy inherits a cache another one shaped.
std::string npc_prefix(int npc, uint32_t tag) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "NPC %05d run %04u. You are %s. Stay in character.", npc, tag,
                kPersonas[npc % 8]);
  std::string s = buf;
  while (s.size() < 80) s += " .";
  return s;
}

std::string make_prompt(int npc, uint32_t tag, uint64_t step) {
  char buf[192];
  std::snprintf(buf, sizeof buf, " Turn %" PRIu64 ": %s. Answer with your next action.", step,
                kSituations[step % 8]);
  return npc_prefix(npc, tag) + buf;
}

uint64_t npc_key(int npc) {
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "npc:%d", npc);
  return XXH3_64bits(buf, static_cast<size_t>(n));
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  if (rank < 1) rank = 1;
  return v[std::min(rank, v.size()) - 1];
}

constexpr int kMaxPriority = 10;  // priorities uniform 0..kMaxPriority
int tier_of(int priority) { return priority <= 2 ? 0 : priority <= 7 ? 1 : 2; }

// ---------------------------------------------------------------- oracle bound

// Exact LRU over NPC ids: the fake GPU's PrefixCache with the bench's prompts
// (one prefix per NPC and policy).
class LruSim {
 public:
  LruSim(size_t capacity, int keys) : cap_(capacity), cached_(keys, 0), pos_(keys) {}
  bool access(int key) {
    if (cached_[key]) {
      order_.splice(order_.begin(), order_, pos_[key]);
      return true;
    }
    if (cap_ == 0) return false;
    if (order_.size() >= cap_) {
      cached_[order_.back()] = 0;
      order_.pop_back();
    }
    order_.push_front(key);
    pos_[key] = order_.begin();
    cached_[key] = 1;
    return false;
  }

 private:
  size_t cap_;
  std::list<int> order_;  // most recent first
  std::vector<char> cached_;
  std::vector<std::list<int>::iterator> pos_;
};

// Oracle bound on a window's prefix-cache hit rate, given where its requests
// went (share[g], any scale). Assumes: each GPU an exact LRU of `cache`
// prefixes; NPCs equally likely (uniform choice, as the bench); urgent
// requests (priority 0..2 of the uniform 0..kMaxPriority mix, as the bench)
// all on the fastest GPU, whatever their NPC; the same per-GPU split as
// measured. The oracle homes whole NPCs: H = round(N (s_fast - u) / (1 - u))
// on the fastest GPU (urgent plus their traffic then gives it its measured
// share), the other N - H split among the other GPUs in proportion to their
// shares; every non-urgent request goes to its NPC's home. Simulated with a
// fixed seed (warm-up, then kMeasured requests). This is the best an affinity
// policy can do under those assumptions, not a proof for all policies.
double oracle_bound(int npcs, int cache, const std::vector<double>& share, size_t fast, uint64_t seed) {
  const size_t n = share.size();
  int urgent_prios = 0;
  for (int p = 0; p <= kMaxPriority; p++) urgent_prios += tier_of(p) == 0;
  const double u = static_cast<double>(urgent_prios) / (kMaxPriority + 1);
  double total = 0, others = 0;
  for (size_t g = 0; g < n; g++) total += share[g], others += g == fast ? 0 : share[g];
  if (total <= 0) return NAN;
  const double s_fast = share[fast] / total;
  int h = static_cast<int>(std::lround(npcs * (s_fast - u) / (1 - u)));
  h = std::clamp(h, 0, npcs);
  if (others <= 0) h = npcs;

  std::vector<size_t> home(npcs, fast);
  int next = h;  // NPCs 0..h-1 on the fastest GPU, then the others' blocks
  double acc = 0;
  for (size_t g = 0; g < n; g++) {
    if (g == fast || others <= 0) continue;
    acc += share[g] / others * (npcs - h);
    int upto = std::min(npcs, static_cast<int>(std::lround(acc)) + h);
    for (; next < upto; next++) home[next] = g;
  }

  std::vector<LruSim> caches;
  for (size_t g = 0; g < n; g++) caches.emplace_back(static_cast<size_t>(cache), npcs);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> npc_dist(0, npcs - 1), pri_dist(0, kMaxPriority);
  constexpr int kWarmup = 50000, kMeasured = 200000;
  uint64_t hits = 0;
  for (int i = 0; i < kWarmup + kMeasured; i++) {
    int npc = npc_dist(rng);
    size_t g = tier_of(pri_dist(rng)) == 0 ? fast : home[npc];
    if (caches[g].access(npc) && i >= kWarmup) hits++;
  }
  return static_cast<double>(hits) / kMeasured;
}

// ---------------------------------------------------------------- the loop

struct PromCounters {
  double hits = 0, queries = 0, waiting = 0, running = 0;
  bool ok = false;
};

PromCounters parse_metrics(const std::string& text) {
  PromCounters c;
  std::istringstream in(text);
  std::string line;
  auto value = [](const std::string& l) { return std::atof(l.substr(l.rfind(' ') + 1).c_str()); };
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto starts = [&](const char* name) {
      size_t n = std::strlen(name);
      return line.compare(0, n, name) == 0 && (line[n] == '{' || line[n] == ' ');
    };
    if (starts("fake_gpu_prefix_cache_hits_total")) c.hits = value(line), c.ok = true;
    else if (starts("fake_gpu_prefix_cache_queries_total")) c.queries = value(line);
    else if (starts("vllm:num_requests_waiting")) c.waiting = value(line);
    else if (starts("vllm:num_requests_running")) c.running = value(line);
  }
  return c;
}

class Loop {
 public:
  using Handler = std::function<void(HttpResult&)>;

  uint64_t start(HttpRequest req, Handler h) {
    req.tag = next_tag_++;
    uint64_t tag = req.tag;
    handlers_.emplace(tag, std::move(h));
    http_.start(std::move(req));
    return tag;
  }
  void cancel(uint64_t tag) {
    http_.cancel(tag);
    handlers_.erase(tag);
  }
  size_t in_flight() const { return handlers_.size(); }

  // Waits until socket activity, libcurl's timer or `deadline_ns`, then
  // drives transfers and runs the handlers of finished ones.
  void run_once(int64_t deadline_ns) {
    int64_t wait_ns = std::max<int64_t>(0, deadline_ns - now_ns());
    long curl_ms = http_.next_timeout_ms();
    if (curl_ms >= 0) wait_ns = std::min<int64_t>(wait_ns, curl_ms * int64_t{1000000});
    struct pollfd pfd{http_.epoll_fd(), POLLIN, 0};
    struct timespec ts{static_cast<time_t>(wait_ns / kSec), static_cast<long>(wait_ns % kSec)};
    ppoll(&pfd, 1, &ts, nullptr);
    http_.perform();
    for (HttpResult& r : http_.take_finished()) {
      auto it = handlers_.find(r.tag);
      if (it == handlers_.end()) continue;
      Handler h = std::move(it->second);
      handlers_.erase(it);
      h(r);
    }
  }
  // Runs until `done()` or the deadline.
  bool run_until(const std::function<bool()>& done, int64_t deadline_ns) {
    while (!done()) {
      if (now_ns() >= deadline_ns || g_stop) return false;
      run_once(std::min(deadline_ns, now_ns() + 50 * int64_t{1000000}));
    }
    return true;
  }

 private:
  HttpClient http_;
  uint64_t next_tag_ = 1;
  std::unordered_map<uint64_t, Handler> handlers_;
};

// ---------------------------------------------------------------- the bench

struct WindowResult {
  std::string policy;
  double load = 0, offered_rps = 0;
  double done_rps = 0, pct_cap = 0;
  double p50[3]{}, p99[3]{};
  double done_pct[3]{};  // of requests arriving in the window, finished by its end
  size_t samples[3]{};
  std::vector<double> share;  // of requests sent during the window, per GPU
  uint64_t errors = 0, arrived = 0, sent = 0;
  size_t backlog_local = 0, backlog_gpu = 0;  // at the end: waiting here / in flight there
  double hit_rate = NAN;
  double oracle_bound = NAN;  // oracle_bound() for this window's shares
  std::vector<double> gpu_hit_rate;  // per GPU, NAN when unknown
  uint64_t aff_hits = 0, aff_misses = 0;  // Router::affinity_hits/misses (home among *eligible*)
  uint64_t keyed_sent = 0, true_home_sent = 0;  // priority 3..10 sends that reached the key's ring home
  double max_local_wait_ms = 0;
};

class Bench {
 public:
  explicit Bench(Options o) : opt_(std::move(o)), rng_(opt_.seed) {
    params_.max_tokens = opt_.max_tokens;
    params_.temperature = 0.0;
  }

  int run();

 private:
  HttpRequest completion(size_t gpu, const std::string& prompt, int priority) const {
    HttpRequest r;
    r.url = opt_.gpus[gpu].url + api_path(Api::completions);
    r.body = build_request_body(Api::completions, opt_.model, prompt, params_, priority, false);
    r.timeout_ms = opt_.timeout_ms;
    return r;
  }
  bool answered_ok(const HttpResult& r) const {
    if (!r.transport_ok || r.status != 200) return false;
    return parse_response(Api::completions, r.body).ok;
  }
  // Synchronous helpers (nothing else runs meanwhile).
  std::optional<HttpResult> call(HttpRequest req, double timeout_s);
  std::vector<PromCounters> read_metrics();
  void reset_gpus();

  std::vector<double> service_times(size_t gpu, bool warm);
  double gpu_capacity(size_t gpu, double* hit_rate);
  WindowResult window(const std::string& policy, double load, uint32_t tag, double extra_warmup_s);
  void print_header() const;
  void print_row(const WindowResult& w) const;
  size_t fastest_gpu() const;  // lowest unloaded (cold) service time

  Options opt_;
  std::mt19937_64 rng_;
  GenerationParams params_;
  Loop loop_;
  uint32_t run_tag_ = 0;  // prefix tag: a fresh one per window / measurement
  uint64_t step_ = 0;
  double capacity_ = 0;
  std::vector<double> cold_ms_, warm_ms_;
  std::vector<double> gpu_cap_rps_;
};

size_t Bench::fastest_gpu() const {
  size_t fast = 0;
  for (size_t g = 1; g < cold_ms_.size(); g++)
    if (cold_ms_[g] < cold_ms_[fast]) fast = g;
  return fast;
}

std::optional<HttpResult> Bench::call(HttpRequest req, double timeout_s) {
  std::optional<HttpResult> out;
  uint64_t tag = loop_.start(std::move(req), [&](HttpResult& r) { out = std::move(r); });
  if (!loop_.run_until([&] { return out.has_value(); }, now_ns() + static_cast<int64_t>(timeout_s * kSec)))
    loop_.cancel(tag);
  return out;
}

std::vector<PromCounters> Bench::read_metrics() {
  std::vector<PromCounters> out(opt_.gpus.size());
  size_t pending = opt_.gpus.size();
  std::vector<uint64_t> tags;
  for (size_t g = 0; g < opt_.gpus.size(); g++) {
    HttpRequest r;
    r.url = opt_.gpus[g].url + "/metrics";
    r.timeout_ms = 5000;
    tags.push_back(loop_.start(std::move(r), [&out, &pending, g](HttpResult& res) {
      if (res.transport_ok && res.status == 200) out[g] = parse_metrics(res.body);
      pending--;
    }));
  }
  if (!loop_.run_until([&] { return pending == 0; }, now_ns() + 5 * kSec))
    for (uint64_t t : tags) loop_.cancel(t);
  return out;
}

void Bench::reset_gpus() {
  for (size_t g = 0; g < opt_.gpus.size(); g++) {
    HttpRequest r;
    r.url = opt_.gpus[g].url + "/admin/reset";
    r.body = "{}";
    r.timeout_ms = 5000;
    call(std::move(r), 5);
  }
}

// Sequential requests, one at a time. Cold: every prompt a new prefix (the
// full prefill, base_ms). Warm: one NPC repeating its prefix (a cache hit
// after the first, which is dropped).
std::vector<double> Bench::service_times(size_t gpu, bool warm) {
  std::vector<double> ms;
  uint32_t tag = ++run_tag_;
  int npc = 0;
  for (int i = 0; i < opt_.service_n + (warm ? 1 : 0) && !g_stop; i++) {
    std::string prompt = warm ? make_prompt(0, tag, step_++) : make_prompt(npc++, tag, step_++);
    auto r = call(completion(gpu, prompt, 5), 30);
    if (!r || !answered_ok(*r)) {
      std::fprintf(stderr, "router_bench: %s: unloaded request failed (%s)\n", opt_.gpus[gpu].name.c_str(),
                   r ? (r->transport_ok ? ("HTTP " + std::to_string(r->status)).c_str() : r->error.c_str())
                     : "timeout");
      continue;
    }
    if (warm && i == 0) continue;
    ms.push_back(r->elapsed_ms);
  }
  return ms;
}

// One GPU alone, `cap` requests always outstanding, the benchmark's prompt
// mix (uniform NPC over the population, run tag fresh), for capacity_s after
// a 1 s warm-up.
double Bench::gpu_capacity(size_t gpu, double* hit_rate) {
  const uint32_t tag = ++run_tag_;
  std::uniform_int_distribution<int> npc_dist(0, opt_.npcs - 1);
  int64_t t0 = now_ns(), warm_end = t0 + kSec,
          end = warm_end + static_cast<int64_t>(opt_.capacity_s * kSec);
  uint64_t done_in_window = 0, failures = 0;
  std::vector<uint64_t> tags;
  std::function<void()> launch = [&]() {
    HttpRequest req = completion(gpu, make_prompt(npc_dist(rng_), tag, step_++), 5);
    loop_.start(std::move(req), [&](HttpResult& r) {
      int64_t t = now_ns();
      if (answered_ok(r)) {
        if (t >= warm_end && t < end) done_in_window++;
      } else {
        failures++;
      }
      if (t < end && !g_stop) launch();
    });
  };
  for (int i = 0; i < opt_.gpus[gpu].cap; i++) launch();
  bool metrics_taken = false;
  PromCounters before;
  while (now_ns() < end && !g_stop) {
    if (!metrics_taken && now_ns() >= warm_end) {
      metrics_taken = true;
      // Asynchronous: the saturating requests keep going meanwhile.
      HttpRequest r;
      r.url = opt_.gpus[gpu].url + "/metrics";
      r.timeout_ms = 5000;
      loop_.start(std::move(r), [&before](HttpResult& res) {
        if (res.transport_ok && res.status == 200) before = parse_metrics(res.body);
      });
    }
    loop_.run_once(metrics_taken ? end : warm_end);
  }
  // Let the outstanding ones finish (they start no new ones now).
  loop_.run_until([&] { return loop_.in_flight() == 0; }, now_ns() + 10 * kSec);
  auto after = read_metrics();
  if (before.ok && after[gpu].ok && after[gpu].queries > before.queries)
    *hit_rate = (after[gpu].hits - before.hits) / (after[gpu].queries - before.queries);
  if (failures) std::fprintf(stderr, "router_bench: %s: %" PRIu64 " failures while saturating\n",
                             opt_.gpus[gpu].name.c_str(), failures);
  return done_in_window / opt_.capacity_s;
}

// One bounded window: warm-up, then measure; at the end arrivals stop, the
// local queue is dropped and whatever is still in flight is cancelled (the
// fake GPU frees the slot of a request whose client hung up).
WindowResult Bench::window(const std::string& policy, double load, uint32_t tag, double extra_warmup_s) {
  const size_t n = opt_.gpus.size();
  WindowResult w;
  w.policy = policy;
  w.load = load;
  w.offered_rps = load * capacity_;
  w.share.assign(n, 0);

  reset_gpus();
  std::vector<Endpoint> eps(n);
  for (size_t g = 0; g < n; g++) {
    eps[g].gpu_id = static_cast<int>(g + 1);
    eps[g].max_concurrent = opt_.gpus[g].cap;
  }
  RouterConfig cfg;
  cfg.affinity = policy == "router";
  if (opt_.epsilon >= 0) cfg.affinity_epsilon = opt_.epsilon;
  if (opt_.urgent_reserve >= 0) cfg.urgent_reserve = opt_.urgent_reserve;
  if (opt_.reserve_wait_ms >= 0) cfg.reserve_wait_ms = opt_.reserve_wait_ms;
  Router router(cfg);
  const bool capped = policy == "router" || policy == "router-noaff";

  struct Req {
    int npc, priority;
    int64_t arrival_ns;
    size_t gpu = 0;
    uint64_t http_tag = 0;
  };
  std::map<uint64_t, Req> in_flight;                      // by our id
  std::map<std::pair<int, uint64_t>, Req> waiting;        // (priority, id): the local queue
  std::multiset<int64_t> waiting_since;                    // their arrival times: the backlog's age
  uint64_t next_id = 0;

  std::vector<double> lat[3];
  uint64_t arrived_tier[3]{}, finished_tier[3]{};
  std::vector<uint64_t> sent_per_gpu(n, 0);
  uint64_t completed = 0;
  // The router's ring has the same members and vnodes, so the same homes.
  BoundedLoadRing ring;
  {
    std::vector<int> ids;
    for (const auto& e : eps) ids.push_back(e.gpu_id);
    ring.set_members(ids);
  }

  const int64_t t0 = now_ns();
  const int64_t warm_end = t0 + static_cast<int64_t>((opt_.warmup_s + extra_warmup_s) * kSec);
  const int64_t end = warm_end + static_cast<int64_t>(opt_.measure_s * kSec);
  auto in_window = [&](int64_t t) { return t >= warm_end && t < end; };

  std::exponential_distribution<double> gap(w.offered_rps);
  std::uniform_int_distribution<int> npc_dist(0, opt_.npcs - 1), pri_dist(0, kMaxPriority);
  int64_t next_arrival = t0 + static_cast<int64_t>(gap(rng_) * kSec);

  std::function<void(uint64_t, Req)> send = [&](uint64_t id, Req rq) {
    Endpoint& ep = eps[rq.gpu];
    ep.in_flight++;
    ep.requests++;
    int64_t t_send = now_ns();
    if (in_window(t_send)) {
      sent_per_gpu[rq.gpu]++;
      w.sent++;
      if (policy == "router" && rq.priority >= 3) {
        w.keyed_sent++;
        if (ring.home(npc_key(rq.npc)) == ep.gpu_id) w.true_home_sent++;
      }
      w.max_local_wait_ms = std::max(w.max_local_wait_ms, (t_send - rq.arrival_ns) / 1e6);
    }
    HttpRequest hr = completion(rq.gpu, make_prompt(rq.npc, tag, step_++), rq.priority);
    rq.http_tag = loop_.start(std::move(hr), [&, id](HttpResult& r) {
      auto it = in_flight.find(id);
      if (it == in_flight.end()) return;
      Req done = it->second;
      in_flight.erase(it);
      Endpoint& e = eps[done.gpu];
      e.in_flight--;
      int64_t t = now_ns();
      bool ok = answered_ok(r);
      if (ok) {
        e.latency.add(r.elapsed_ms);
        e.breaker.record_success(t / 1000000);
      } else {
        e.errors++;
        if (r.transport_ok && r.status == 429)
          e.breaker.record_rate_limited(t / 1000000, r.retry_after_s.value_or(0) * 1000);
        else
          e.breaker.record_failure(t / 1000000);
      }
      int tier = tier_of(done.priority);
      if (in_window(t)) {
        if (ok) {
          completed++;
          lat[tier].push_back((t - done.arrival_ns) / 1e6);
        } else {
          w.errors++;
        }
      }
      if (ok && in_window(done.arrival_ns) && t < end) finished_tier[tier]++;
    });
    in_flight.emplace(id, rq);
  };

  // Dispatches the head of the local queue while the router finds a slot.
  auto drain_local = [&]() {
    while (!waiting.empty()) {
      auto head = waiting.begin();
      RouteRequest rr;
      rr.priority = head->second.priority;
      rr.affinity_key = npc_key(head->second.npc);
      rr.waited_ms = (now_ns() - *waiting_since.begin()) / 1000000;  // the oldest waiting request
      auto d = router.pick(eps, rr, now_ms());
      if (!d) break;
      Req rq = head->second;
      uint64_t id = head->first.second;
      waiting_since.erase(waiting_since.find(head->second.arrival_ns));
      waiting.erase(head);
      rq.gpu = d->index;
      send(id, rq);
    }
  };

  std::vector<PromCounters> m_before;
  std::vector<uint64_t> metric_tags;
  bool measuring = false;
  while (!g_stop) {
    int64_t t = now_ns();
    if (!measuring && t >= warm_end) {
      measuring = true;
      // Counter snapshot without stopping the load: asynchronous GETs.
      m_before.assign(n, PromCounters{});
      for (size_t g = 0; g < n; g++) {
        HttpRequest r;
        r.url = opt_.gpus[g].url + "/metrics";
        r.timeout_ms = 5000;
        metric_tags.push_back(loop_.start(std::move(r), [&m_before, g](HttpResult& res) {
          if (res.transport_ok && res.status == 200) m_before[g] = parse_metrics(res.body);
        }));
      }
    }
    if (t >= end) break;
    // Arrivals due now (catching up if the loop was late).
    while (next_arrival <= t && next_arrival < end) {
      Req rq{npc_dist(rng_), pri_dist(rng_), next_arrival};
      uint64_t id = next_id++;
      if (in_window(rq.arrival_ns)) {
        w.arrived++;
        arrived_tier[tier_of(rq.priority)]++;
      }
      if (capped) {
        waiting.emplace(std::make_pair(rq.priority, id), rq);
        waiting_since.insert(rq.arrival_ns);
      } else {
        rq.gpu = policy == "round-robin" ? router.pick_round_robin(eps)
                                         : router.pick_seed_as_written(eps, rq.priority);
        send(id, rq);
      }
      next_arrival += std::max<int64_t>(1, static_cast<int64_t>(gap(rng_) * kSec));
    }
    if (capped) drain_local();
    int64_t deadline = std::min(next_arrival, end);
    if (!measuring) deadline = std::min(deadline, warm_end);
    loop_.run_once(deadline);
    if (capped) drain_local();  // completions freed slots
  }

  // End of the window.
  w.backlog_local = waiting.size();
  w.backlog_gpu = in_flight.size();
  auto m_after = read_metrics();
  waiting.clear();
  waiting_since.clear();
  for (auto& [id, rq] : in_flight) loop_.cancel(rq.http_tag);
  in_flight.clear();
  for (uint64_t t : metric_tags) loop_.cancel(t);  // no-op unless one never answered
  // Let the GPUs see the hang-ups before the next window.
  loop_.run_until([] { return false; }, now_ns() + 300 * int64_t{1000000});

  double hits = 0, queries = 0;
  bool all_ok = !m_before.empty();
  w.gpu_hit_rate.assign(n, NAN);
  for (size_t g = 0; g < n && all_ok; g++) {
    if (!m_before[g].ok || !m_after[g].ok) {
      all_ok = false;
      break;
    }
    double h = m_after[g].hits - m_before[g].hits, q = m_after[g].queries - m_before[g].queries;
    if (q > 0) w.gpu_hit_rate[g] = h / q;
    hits += h;
    queries += q;
  }
  if (all_ok && queries > 0) w.hit_rate = hits / queries;

  w.done_rps = completed / opt_.measure_s;
  w.pct_cap = 100.0 * w.done_rps / capacity_;
  for (int k = 0; k < 3; k++) {
    w.samples[k] = lat[k].size();
    w.p50[k] = percentile(lat[k], 50);
    w.p99[k] = percentile(lat[k], 99);
    w.done_pct[k] = arrived_tier[k] ? 100.0 * finished_tier[k] / arrived_tier[k] : NAN;
  }
  for (size_t g = 0; g < n; g++) w.share[g] = w.sent ? 100.0 * sent_per_gpu[g] / w.sent : 0;
  w.oracle_bound = oracle_bound(opt_.npcs, opt_.prefix_cache, w.share, fastest_gpu(), opt_.seed);
  w.aff_hits = router.affinity_hits();
  w.aff_misses = router.affinity_misses();
  return w;
}

void Bench::print_header() const {
  std::string shares;
  for (size_t g = 0; g < opt_.gpus.size(); g++) shares += (g ? "/" : "") + opt_.gpus[g].name;
  std::printf("\n%-12s %5s %7s %7s %6s | %-13s %-13s %-13s | %-11s | %-10s | %4s %6s | %4s %5s %-14s %5s\n",
              "policy", "load", "offer/s", "done/s", "%cap", "p50/p99 0-2", "p50/p99 3-7", "p50/p99 8-10",
              "done%/tier", "sent%/GPU", "err", "backlg", "hit", "bound", "hit/GPU", "home%");
  std::printf("(GPUs in order: %s)\n", shares.c_str());
}

std::string fmt_ms(double p50, double p99) {
  char b[32];
  if (std::isnan(p50)) return "-";
  auto one = [](double v) {
    char s[16];
    if (v >= 10000) std::snprintf(s, sizeof s, "%.0fk", v / 1000);
    else if (v >= 100) std::snprintf(s, sizeof s, "%.0f", v);
    else std::snprintf(s, sizeof s, "%.1f", v);
    return std::string(s);
  };
  std::snprintf(b, sizeof b, "%s/%s", one(p50).c_str(), one(p99).c_str());
  return b;
}

void Bench::print_row(const WindowResult& w) const {
  std::string shares, done;
  char b[32];
  for (size_t g = 0; g < w.share.size(); g++) {
    std::snprintf(b, sizeof b, "%s%.0f", g ? "/" : "", w.share[g]);
    shares += b;
  }
  for (int k = 0; k < 3; k++) {
    std::snprintf(b, sizeof b, "%s%.0f", k ? "/" : "", w.done_pct[k]);
    done += b;
  }
  auto rate = [](double v) {
    char t[16];
    if (std::isnan(v)) return std::string("-");
    std::snprintf(t, sizeof t, "%.2f", v);
    return std::string(t);
  };
  std::string gpu_hits;
  for (size_t g = 0; g < w.gpu_hit_rate.size(); g++) gpu_hits += (g ? "/" : "") + rate(w.gpu_hit_rate[g]);
  std::string home = "-";
  if (w.keyed_sent > 0) {
    std::snprintf(b, sizeof b, "%.0f", 100.0 * w.true_home_sent / w.keyed_sent);
    home = b;
  }
  std::printf("%-12s %4.0f%% %7.0f %7.0f %5.1f%% | %-13s %-13s %-13s | %-11s | %-10s | %4" PRIu64
              " %6zu | %4s %5s %-14s %5s\n",
              w.policy.c_str(), w.load * 100, w.offered_rps, w.done_rps, w.pct_cap,
              fmt_ms(w.p50[0], w.p99[0]).c_str(), fmt_ms(w.p50[1], w.p99[1]).c_str(),
              fmt_ms(w.p50[2], w.p99[2]).c_str(), done.c_str(), shares.c_str(), w.errors,
              w.backlog_local + w.backlog_gpu, rate(w.hit_rate).c_str(), rate(w.oracle_bound).c_str(),
              gpu_hits.c_str(), home.c_str());
  std::fflush(stdout);
}

int Bench::run() {
  const size_t n = opt_.gpus.size();
  std::printf("router_bench: %zu GPUs, %d NPCs, max_tokens %d, priorities uniform 0..10, "
              "warm-up %.1fs (+%.1fs before a policy's first window) + measure %.1fs per window\n",
              n, opt_.npcs, opt_.max_tokens, opt_.warmup_s, opt_.first_warmup_s, opt_.measure_s);

  {
    BoundedLoadRing ring;
    std::vector<int> ids;
    for (size_t g = 0; g < n; g++) ids.push_back(static_cast<int>(g + 1));
    ring.set_members(ids);
    std::vector<int> homed(n, 0);
    for (int k = 0; k < opt_.npcs; k++) homed[static_cast<size_t>(*ring.home(npc_key(k)) - 1)]++;
    std::printf("affinity ring homes (NPCs per GPU):");
    for (size_t g = 0; g < n; g++) std::printf(" %s %d", opt_.gpus[g].name.c_str(), homed[g]);
    std::printf("\n");
  }

  // Unloaded service time.
  std::printf("\nunloaded service time (%d sequential requests, client-side incl. loopback HTTP):\n",
              opt_.service_n);
  std::printf("  %-12s %4s %12s %12s %12s\n", "gpu", "cap", "cold p50", "cold mean", "warm p50");
  cold_ms_.assign(n, NAN);
  warm_ms_.assign(n, NAN);
  for (size_t g = 0; g < n && !g_stop; g++) {
    auto cold = service_times(g, false);
    auto warm = service_times(g, true);
    double mean = 0;
    for (double v : cold) mean += v;
    mean = cold.empty() ? NAN : mean / cold.size();
    cold_ms_[g] = percentile(cold, 50);
    warm_ms_[g] = percentile(warm, 50);
    std::printf("  %-12s %4d %10.1fms %10.1fms %10.1fms\n", opt_.gpus[g].name.c_str(), opt_.gpus[g].cap,
                cold_ms_[g], mean, warm_ms_[g]);
  }
  std::fflush(stdout);

  // Capacity.
  gpu_cap_rps_.assign(n, 0);
  if (opt_.capacity_rps > 0) {
    capacity_ = opt_.capacity_rps;
    std::printf("\nfleet capacity: %.0f requests/s (given)\n", capacity_);
  } else {
    std::printf("\ncapacity (each GPU alone, cap requests always outstanding, %.1fs after 1s warm-up, "
                "the benchmark's prompt mix):\n",
                opt_.capacity_s);
    for (size_t g = 0; g < n && !g_stop; g++) {
      reset_gpus();
      double hit = NAN;
      gpu_cap_rps_[g] = gpu_capacity(g, &hit);
      capacity_ += gpu_cap_rps_[g];
      std::printf("  %-12s cap %3d: %7.1f requests/s (prefix-cache hit rate %.2f)\n", opt_.gpus[g].name.c_str(),
                  opt_.gpus[g].cap, gpu_cap_rps_[g], hit);
      std::fflush(stdout);
    }
    std::printf("  fleet capacity: %.1f requests/s\n", capacity_);
  }
  if (capacity_ <= 0 || g_stop) {
    std::fprintf(stderr, "router_bench: no capacity measured\n");
    return 1;
  }

  // The windows: policy-major, loads ascending.
  std::vector<WindowResult> results;
  print_header();
  for (const auto& p : opt_.policies) {
    const uint32_t tag = ++run_tag_;
    bool first = true;
    for (double l : opt_.loads) {
      if (g_stop) break;
      results.push_back(window(p, l, tag, first ? opt_.first_warmup_s : 0.0));
      first = false;
      print_row(results.back());
    }
  }
  std::printf("\n(latency = scheduled arrival -> answer, ms, requests finished in the measured window; "
              "done%% = share of the window's arrivals answered by its end; sent%% = where the window's "
              "requests went; backlg = still queued locally or at a GPU at the end (then cancelled); "
              "hit = fake GPUs' prefix-cache hit rate over the window, all and per GPU; bound = oracle bound on hit "
              "for the window's sent%%/GPU (LRU of %d entries/GPU, NPCs homed whole, urgent on the fastest "
              "GPU; see test/bench/README.md); home%% = share of "
              "the router's priority 3..10 requests sent to their NPC's home GPU on the ring)\n",
              opt_.prefix_cache);

  if (!opt_.tsv.empty()) {
    FILE* f = std::fopen(opt_.tsv.c_str(), "w");
    if (!f) {
      std::perror(opt_.tsv.c_str());
      return 1;
    }
    const size_t fast = fastest_gpu();
    std::fprintf(f, "calib\tcapacity_rps\t%.3f\n", capacity_);
    std::fprintf(f, "calib\tfast_gpu\t%s\n", opt_.gpus[fast].name.c_str());
    std::fprintf(f, "calib\tfast_cold_ms\t%.3f\n", cold_ms_[fast]);
    std::fprintf(f, "calib\tfast_warm_ms\t%.3f\n", warm_ms_[fast]);
    std::fprintf(f, "calib\tprefix_cache\t%d\n", opt_.prefix_cache);
    std::fprintf(f, "#policy\tload\toffered_rps\tdone_rps\tpct_cap\tp50_0_2\tp99_0_2\tp50_3_7\tp99_3_7\t"
                    "p50_8_10\tp99_8_10\tdone_0_2\tdone_3_7\tdone_8_10\terrors\tbacklog\thit_rate\tshares\t"
                    "gpu_hit_rates\trouter_affinity_hits\trouter_affinity_misses\tkeyed_sent\ttrue_home_sent\toracle_bound\n");
    for (const auto& w : results) {
      std::string shares;
      char b[32];
      for (size_t g = 0; g < w.share.size(); g++) {
        std::snprintf(b, sizeof b, "%s%.1f", g ? "/" : "", w.share[g]);
        shares += b;
      }
      std::string gpu_hits;
      for (size_t g = 0; g < w.gpu_hit_rate.size(); g++) {
        std::snprintf(b, sizeof b, "%s%.4f", g ? "/" : "", w.gpu_hit_rate[g]);
        gpu_hits += b;
      }
      std::fprintf(f, "row\t%s\t%.2f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%" PRIu64
                      "\t%zu\t%.4f\t%s\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%.4f\n",
                   w.policy.c_str(), w.load, w.offered_rps, w.done_rps, w.pct_cap, w.p50[0], w.p99[0], w.p50[1],
                   w.p99[1], w.p50[2], w.p99[2], w.done_pct[0], w.done_pct[1], w.done_pct[2], w.errors,
                   w.backlog_local + w.backlog_gpu, w.hit_rate, shares.c_str(), gpu_hits.c_str(), w.aff_hits,
                   w.aff_misses, w.keyed_sent, w.true_home_sent, w.oracle_bound);
    }
    std::fclose(f);
  }
  return g_stop ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_options(argc, argv);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  try {
    Bench b(std::move(opt));
    return b.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "router_bench: %s\n", e.what());
    return 1;
  }
}
