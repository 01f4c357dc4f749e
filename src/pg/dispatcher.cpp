// The dispatcher background worker: takes queued NPC decisions and
// generate() calls to the GPU fleet and writes the answers back.
//
// One event loop: the worker latch (new work committed, fleet changed,
// generate() slot filled, SIGHUP/SIGTERM) and libcurl's sockets (through one
// epoll descriptor) wake the same wait (worker_wait). A rolling window of
// requests is in flight, bounded per endpoint by max_concurrent; a new request
// starts as soon as a slot frees. New decisions arrive through the commit
// handoff (handoff.hpp) and are sent before their claim; otherwise only what
// can be sent now is claimed, so waiting work stays in the table in priority
// order. Results are written in small batched transactions; no transaction is
// ever open across network I/O. Redis (the L2 cache) is never in front of a
// request: a handed-off request is sent after an L1 read and L2 is asked once
// it is out, and cache fills do not wait for Redis's reply.
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <sstream>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "core/steady_clock.hpp"
#include "core/attempt.hpp"
#include "core/generation.hpp"
#include "core/handoff_policy.hpp"
#include "core/http_client.hpp"
#include "core/l2_asks.hpp"
#include "core/cache_policy.hpp"
#include "core/epoll_set.hpp"
#include "core/fleet.hpp"
#include "core/prometheus_text.hpp"
#include "core/router.hpp"
#include "decision_store.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "handoff.hpp"
#include "shared_state.hpp"
#include "spi.hpp"
#include "tiered_cache.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

PGDLLEXPORT void npc_scale_dispatcher_main(Datum main_arg);
}

namespace npc_scale {
namespace {

constexpr long kHousekeepingMs = 1000;   // lease recovery, deadline expiry
constexpr int64_t kDeferredWriteMs = 100;  // a locked row's result is tried again this often
constexpr int64_t kStepRetryMs = 250;     // a tick step that failed on its own (see isolated_step)
constexpr int64_t kWriteBackoffMinMs = 50, kWriteBackoffMaxMs = 2000;
constexpr long kNoExtensionWaitMs = 1000;
// A handed-off request in flight 5 ms is claimed (running, leased); one
// answered sooner is claimed by its answer's write: one statement, not two.
// A row whose transaction is still committing is looked at again every 1 ms
// (the commit itself does not wake the dispatcher), less often, up to every
// 50 ms, if its commit takes long (see commit_look_interval_ms).
constexpr HandoffTiming kHandoffTiming{5, 1, 50};

BreakerConfig breaker_config() {
  BreakerConfig b;
  b.consecutive_failures = guc_breaker_failures;
  b.error_rate = guc_breaker_error_rate;
  b.window = guc_breaker_window;
  b.min_requests = guc_breaker_min_requests;
  b.cooldown_ms = guc_breaker_cooldown_ms;
  return b;
}

int64_t now_ms() { return steady_now_ms(); }

void log_warning(const std::string& what) {
  pg_call([&] { ereport(WARNING, (errmsg("npc_scale dispatcher: %s", what.c_str()))); });
}

// For the loop's catch blocks: nothing may leave them (see worker_recover_and_warn).
void warn_and_recover(const std::exception& e) noexcept {
  worker_recover_and_warn("npc_scale dispatcher: %s", e.what());
}

// A probe is two requests: /health, then /v1/models (probe_model) to see
// that the endpoint serves the configured model with our api_key: /health
// alone passes for a wrong model or key, and the breaker would close only
// to see every request fail again.
enum class Work { decision, sync, probe, probe_model, scrape };

struct InFlight {
  Work kind = Work::decision;
  bool sync = false;
  int64_t decision_id = 0;  // queued work
  int attempts = 0;         // 0: handed off and not claimed yet
  bool from_queued = false;  // answered before its claim: the answer's write claims it
  int slot = -1;            // generate() work
  uint64 ticket = 0;
  int gpu_id = 0;           // the row it was sent for, as the results name it
  uint64_t member = 0;      // the fleet member that sent it: whose slot its end frees
  Api api = Api::completions;
  std::vector<std::string> choices;  // params.choices: the answer must be one of them
  std::string cache_key;         // non-empty: cacheable; identical requests share this one
  int64_t cache_ttl_s = 0;
  int64_t times_out_at_ms = 0;      // when its request times out at the latest (once sent)
  long timeout_ms = 0;              // the time it was given
  std::vector<InFlight> followers;  // coalesced identical requests, answered with this one
};

class Dispatcher {
 public:
  void run();

 private:
  void start_up();
  void tick();
  void reload_endpoints_if_changed(bool force = false, bool log_only_changes = false);
  void configure_router();
  // own_wait_ms: how long this piece of work has waited for a slot it may
  // use (the urgent reserve opens to it after npc_scale.reserve_wait).
  std::optional<size_t> route(int priority, std::optional<uint64_t> affinity_key,
                              std::optional<int> avoid_gpu, int64_t own_wait_ms = 0);
  // For route(): since when `key` has found no slot it may use (0 if it
  // just did); waiting_for_slot() starts the clock, routed() stops it.
  int64_t waited_for_slot_ms(const std::pair<int64_t, uint64_t>& key) const;
  void waiting_for_slot(const std::pair<int64_t, uint64_t>& key);
  void routed(const std::pair<int64_t, uint64_t>& key) { refused_since_ms_.erase(key); }
  int free_capacity() const;
  std::optional<uint64_t> affinity_key(const ClaimedDecision& d) const;
  bool send(size_t index, InFlight info, const std::string& prompt, const GenerationParams& params,
            int priority, long timeout_ms);
  void record_outcome(const InFlight& f, const HttpResult& r, bool success, const std::string& error);
  bool another_endpoint(uint64_t member);
  AttemptOutcome resolve(const InFlight& f, const AttemptReply& r, uint64_t jitter_seed);
  // Ids the table must not claim, recover or expire under the dispatcher:
  // handed off and sent but not claimed yet, or answered and not written
  // yet (deferred by a game session's row lock too). The writes decide.
  std::vector<int64_t> held_back_ids() const;
  // Those, and the decisions in flight: lease recovery's exclusions.
  std::vector<int64_t> not_recoverable_ids() const;
  void fail_refusing_rows(const std::vector<RefusedRow>& rows, const std::string& what);
  void fail_rows_to_fail(std::vector<std::string>& lines);
  void prune_unwritable();
  int64_t next_unwritable_prune_ms_ = 0;
  void start_probes_and_scrapes();
  void finish_probe_or_scrape(const InFlight& f, const HttpResult& r);
  void get_from_endpoint(Work kind, Endpoint& e, MemberInfo& m, const char* path, long timeout_ms);
  void publish_stats();
  void serve_sync_slots();
  void serve_taken_slot(int i, uint64 ticket);
  void claim_and_send();
  void set_capacity_blocked(bool blocked);
  // Decisions handed off at commit: sent at once, then claimed by id.
  void send_handed_off();
  void claim_handed_off();
  void ask_l2_after_send();
  void take_l2_answers();
  void watch_redis();
  void to_table_after_commit(TransactionId xid);
  void release_to_table_path(bool even_when_full = false);
  bool table_after_commit_polled() const {
    return !table_after_commit_.empty() && (!capacity_blocked_ || free_capacity() > 0);
  }
  void cancel_request(uint64_t tag);
  void fill_cache();
  void flush_results();
  void abort_cancelled();
  void write_batch(std::vector<DecisionResult>& source, bool skip_locked);
  void handle_finished();
  void flush_log_lines();
  std::vector<std::string> log_lines_;  // LOG lines held until a reply is handled
  void finish(const InFlight& f, const AttemptReply& r);
  void finish_decision(const InFlight& f, const AttemptReply& r);
  // Joins `info` to an identical request in flight; true if it did.
  // Joins info to an identical request in flight that ends by `until_ms`
  // (the follower's own timeout: within its lease and deadline).
  bool coalesce(const InFlight& info, int64_t until_ms, std::optional<int> avoid_gpu);
  void forget_leader(const std::string& cache_key, uint64_t tag);
  std::optional<std::string> known_answer(const std::string& key) const;
  bool answer_sync_slot(const InFlight& f, const std::string& response);
  void requeue_followers(const std::vector<InFlight>& followers);
  void publish_fleet_signature();
  void finish_sync(const InFlight& f, const AttemptReply& r);
  void fail_sync_slot(int index, uint64 ticket, const std::string& error);
  void housekeeping();
  // Every decision a previous dispatcher left running back to the queue:
  // until it has succeeded nothing is claimed or taken from the hand-off
  // (it requeues every running row, and would requeue this one's too).
  void recover_at_start();
  bool recovered_at_start_ = false;
  int64_t start_recovery_retry_at_ms_ = 0;
  // A step of the tick that reads a table and may fail on its own (its lock
  // wait timing out while a migration holds gpu_endpoints, VACUUM FULL the
  // queue): logged, and tried again kStepRetryMs later, while the rest of
  // the tick (generate(), hand-offs, answers, housekeeping) goes on. The
  // step marks its work seen only once it succeeds.
  template <typename Step>
  void isolated_step(int64_t& retry_at_ms, Step&& step);
  int64_t endpoints_retry_at_ms_ = 0;  // 0: no failed load waiting
  int64_t cancels_retry_at_ms_ = 0;
  long wait_timeout_ms() const;
  RetryPolicy retry_policy() const {
    return RetryPolicy{guc_max_attempts, guc_retry_base_ms, guc_retry_max_ms};
  }

  HttpClient http_;
  // What the wait watches: libcurl's sockets, and Redis's while an L2 ask is pending.
  EpollSet loop_fds_;
  int redis_watched_fd_ = -1;
  Router router_;
  Fleet fleet_;
  uint64 endpoints_generation_ = 0;
  int64_t next_stats_ms_ = 0;
  std::string prefix_types_;  // guc_prefix_affinity_types, padded with commas
  std::unordered_map<uint64_t, InFlight> in_flight_;
  std::unordered_map<std::string, uint64_t> in_flight_by_key_;  // cache key → leader's tag
  std::string fleet_signature_;
  uint64_t next_tag_ = 1;
  std::vector<DecisionResult> pending_results_;
  // Results for rows another session holds locked, written again at
  // deferred_due_ms_ without waiting for the lock.
  std::vector<DecisionResult> deferred_results_;
  int64_t deferred_due_ms_ = 0;
  // After a failed write, the next is not tried before this (backing off
  // to kWriteBackoffMaxMs while it keeps failing), so a persistent error
  // (a DDL lock held on the queue) neither spins the loop nor floods the log.
  int64_t write_retry_at_ms_ = 0;
  int64_t write_backoff_ms_ = 0;
  // Rows that refused every write of ours, even their failure (a game's
  // trigger or constraint): left alone by claims, recovery and expiry while
  // they stay unfinished, so they cannot stop those statements for every row.
  std::unordered_set<int64_t> unwritable_;
  // Refusing rows to fail (error: the reason recorded) whose failure waited
  // out its lock (a game session holding the row): tried again at
  // to_fail_due_ms_, and held back from claims, recovery and expiry
  // meanwhile. Forgetting one would leave it running until its lease lapsed.
  std::vector<RefusedRow> to_fail_;
  int64_t to_fail_due_ms_ = 0;
  uint64 cancels_seen_ = 0;  // shared cancels_generation at the last look
  struct SentHandoff {
    int64_t id;
    uint64_t tag;
    TransactionId xid;  // the row's transaction: claimed once it has committed
    int64_t sent_ms;
  };
  std::vector<SentHandoff> sent_unclaimed_;
  // Decisions the table path claimed since the last hand-off take: their
  // entries, if any, are in that take and are not sent again.
  std::unordered_set<int64_t> claimed_since_take_;
  // Transactions whose handed-off rows were left to the table path (a cache
  // hit, an identical request in flight, no capacity, a bad row): claimed
  // from the table once the transaction has committed. While the fleet is
  // full they are not looked at: each freed slot brings a look anyway.
  std::unordered_map<TransactionId, int64_t> table_after_commit_;  // → when first left to it
  // Decisions whose answer the hand-off path promoted from L2 (and counted
  // as an L2 hit), by when: the table path answers them as L2 hits. Pruned
  // after a minute (a row cancelled or rolled back meanwhile).
  std::unordered_map<int64_t, int64_t> promoted_from_l2_;
  std::vector<L2Check> ask_l2_after_send_;  // sent this round, cacheable
  // Asks in flight. Their requests are neither claimed nor answered until
  // the answer (a hit withdraws them; it comes within redis_command_timeout,
  // or the ask is given up as a miss 1 s after).
  L2Asks l2_asks_;
  struct Parked {
    InFlight info;
    AttemptReply reply;
  };
  // Answers that arrived before their handed-off row could be claimed (its
  // transaction had not committed yet), by request tag.
  std::unordered_map<uint64_t, Parked> parked_;
  struct CacheFill {
    std::string key, response;
    int64_t ttl_s;
  };
  std::vector<CacheFill> cache_fills_;  // answers to cache once they are written
  std::deque<HttpResult> finished_;     // replies taken from libcurl, not handled yet
  bool maybe_more_work_ = true;   // look at the queue on the next round
  bool capacity_blocked_ = false;  // the last look stopped at the fleet's capacity
  std::optional<int64_t> blocked_since_ms_;  // since when work has been waiting for a slot
  bool reserve_opened_ = false;              // the look after reserve_wait has been taken
  // Work that found only reserved slots, since when: (decision id, 0), or
  // (-1 - sync slot, ticket) for a generate() call. Each piece of work
  // counts its own wait, so one that waits is not held back by the fleet's
  // signal restarting (a claim that empties the queue clears that).
  std::map<std::pair<int64_t, uint64_t>, int64_t> refused_since_ms_;
  // generate() calls to retry, by the same key: not before this time on
  // the GPU that just failed them (another GPU may take them at once).
  std::map<std::pair<int64_t, uint64_t>, int64_t> sync_retry_due_ms_;
  int64_t next_housekeeping_ms_ = 0;
  int64_t next_fleet_check_ms_ = 0;
  std::optional<int64_t> retry_due_ms_;  // earliest queued retry
};

void Dispatcher::run() {
  worker_startup(WorkerKind::dispatcher);
  cache_connect_redis_in_background();
  start_up();
  for (;;) {
    try {
      watch_redis();
    } catch (const std::exception& e) {
      warn_and_recover(e);  // the ask's timeout still wakes us
    }
    try {
      (void)worker_wait(wait_timeout_ms(), loop_fds_.fd(), WL_SOCKET_READABLE);
      tick();
    } catch (const std::exception& e) {
      // A failed transaction (e.g. the extension dropped mid-way) or a
      // pg_cancel_backend() is logged and the loop goes on; neither takes
      // the worker, and the requests it has in flight, down.
      warn_and_recover(e);
      maybe_more_work_ = true;
    }
  }
}

void Dispatcher::start_up() {
  loop_fds_.watch(http_.epoll_fd());
  // Every statement of the dispatcher touches a small batch of rows through
  // an index. Its plans are generic and cached, costed on whatever the
  // statistics said at the time (often: an empty queue), so a sequential
  // scan, a bitmap scan or a hash join looked as cheap as an index lookup —
  // and then read every row (and dead entries) per batch under load. Keep
  // this process on index scans and nested loops.
  pg_call([] {
    SetConfigOption("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION);
    SetConfigOption("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION);
    SetConfigOption("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION);
    SetConfigOption("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION);
  });
  // generate() calls that a previous dispatcher was serving are lost with
  // it: told at once, not after this one finds its extension (after a
  // change of npc_scale.database, perhaps never).
  SharedState& s = shared_state();
  for (int i = 0; i < s.sync_slot_count; i++) {
    SyncSlot* slot = sync_slot(i);
    SpinLockAcquire(&slot->mutex);
    bool orphan = slot->state == SyncState::running;
    uint64 ticket = slot->ticket;
    SpinLockRelease(&slot->mutex);
    if (orphan) fail_sync_slot(i, ticket, "the npc_scale dispatcher restarted while serving it");
  }
  // Idle until CREATE EXTENSION npc_scale has run in this database (a
  // cancel meanwhile is logged, as in the main loop).
  for (;;) {
    try {
      if (extension_ready()) break;
      worker_set_state(WorkerState::idle, "waiting for CREATE EXTENSION npc_scale");
      worker_wait(kNoExtensionWaitMs);
    } catch (const std::exception& e) {
      warn_and_recover(e);
    }
  }
  configure_router();
  // From here on no statement waits long for a lock: a table lock on the
  // queue (LOCK TABLE, VACUUM FULL, a non-concurrent CREATE INDEX) would
  // otherwise stop every request in flight, generate() included. A
  // statement that times out fails its step or its tick, which is logged
  // and tried again later; the result writes wait even less (decision_store).
  pg_call([] { SetConfigOption("lock_timeout", "50ms", PGC_USERSET, PGC_S_SESSION); });
  // Both tried again by the loop while they fail (a dispatcher restarted
  // under a migration's lock still serves generate()).
  isolated_step(start_recovery_retry_at_ms_, [this] { recover_at_start(); });
  isolated_step(endpoints_retry_at_ms_, [this] { reload_endpoints_if_changed(true); });
  worker_set_state(WorkerState::idle);
}

void Dispatcher::recover_at_start() {
  // Decisions a previous dispatcher had claimed go back to the queue.
  int requeued = 0;
  std::vector<RefusedRow> refused;
  wake_awaiting(recover_leases(true, guc_max_attempts, &requeued, {}, &refused));
  recovered_at_start_ = true;
  // Hand-offs a previous dispatcher left untaken may be rows it had claimed
  // (queued again just above, with their attempts and back-off): the table
  // path takes them all, so none is sent as if it were new.
  for (const HandoffEntry& e : handoff_take(MyDatabaseId)) to_table_after_commit(e.xid);
  maybe_more_work_ = true;
  fail_refusing_rows(refused, "it was in flight at the last stop and could not be queued again");
  if (requeued > 0) {
    pg_call([&] {
      ereport(LOG, (errmsg("npc_scale dispatcher: %d decisions in flight at the last stop were "
                           "queued again", requeued)));
    });
  }
}

void Dispatcher::tick() {
  // Only commits that queued rows the handoff did not carry need a look at
  // the table; handed-off ones are read from shared memory below. Read on
  // every round, not only when the wait reported the latch: a commit's
  // SetLatch landing between the wait's return and its ResetLatch is not
  // reported, and its flag is the only trace of it.
  if (pg_atomic_exchange_u32(&shared_state().queue_dirty, 0) != 0) maybe_more_work_ = true;
  if (!recovered_at_start_) isolated_step(start_recovery_retry_at_ms_, [this] { recover_at_start(); });
  if (worker_config_reloaded()) {
    configure_router();
    fleet_.configure(breaker_config(), guc_latency_alpha);
  }
  http_.perform();
  // Redis before the GPUs: an L2 hit withdraws a request whose reply may be
  // among those just collected.
  take_l2_answers();
  handle_finished();
  isolated_step(endpoints_retry_at_ms_, [this] { reload_endpoints_if_changed(); });
  isolated_step(cancels_retry_at_ms_, [this] { abort_cancelled(); });
  start_probes_and_scrapes();
  serve_sync_slots();
  if (capacity_blocked_ && !reserve_opened_ && guc_urgent_reserve > 0 && blocked_since_ms_ &&
      now_ms() >= *blocked_since_ms_ + guc_reserve_wait_ms) {
    reserve_opened_ = true;  // waiting this long opens the urgent reserve: one more look
    maybe_more_work_ = true;
  }
  if (retry_due_ms_ && now_ms() >= *retry_due_ms_) {
    retry_due_ms_.reset();
    maybe_more_work_ = true;
  }
  // New work out first (a send costs microseconds, no transaction), then
  // answers (a durable commit), then Redis for what was just sent, then the
  // claims.
  if (recovered_at_start_) send_handed_off();
  try {
    flush_results();
  } catch (...) {
    ask_l2_after_send();
    claim_handed_off();
    throw;
  }
  ask_l2_after_send();
  claim_handed_off();
  fill_cache();
  release_to_table_path();
  if (maybe_more_work_ && recovered_at_start_) claim_and_send();
  ask_l2_after_send();  // for what the table path sent
  if (now_ms() >= next_housekeeping_ms_) housekeeping();
  if (now_ms() >= next_stats_ms_) publish_stats();
  worker_set_state(in_flight_.empty() ? WorkerState::idle : WorkerState::busy,
                   in_flight_.empty() ? nullptr : "dispatching");
}

template <typename Step>
void Dispatcher::isolated_step(int64_t& retry_at_ms, Step&& step) {
  if (retry_at_ms != 0 && now_ms() < retry_at_ms) return;
  try {
    step();
    retry_at_ms = 0;
  } catch (const std::exception& e) {
    warn_and_recover(e);
    retry_at_ms = now_ms() + kStepRetryMs;
  }
}

long Dispatcher::wait_timeout_ms() const {
  int64_t t = std::max<int64_t>(0, next_housekeeping_ms_ - now_ms());
  for (int64_t at : {endpoints_retry_at_ms_, cancels_retry_at_ms_, start_recovery_retry_at_ms_}) {
    if (at != 0) t = std::min<int64_t>(t, std::max<int64_t>(0, at - now_ms()));
  }
  long curl = http_.next_timeout_ms();
  if (curl >= 0) t = std::min<int64_t>(t, curl);
  if (retry_due_ms_) t = std::min<int64_t>(t, std::max<int64_t>(0, *retry_due_ms_ - now_ms()));
  // Answers to write, or replies a perform() late in the last tick (e.g.
  // sending handed-off work) collected after handle_finished() had run:
  // their sockets are drained and will not wake us, so do not wait.
  if (http_.has_finished() || !finished_.empty()) t = 0;
  if (!pending_results_.empty()) t = std::min<int64_t>(t, std::max<int64_t>(0, write_retry_at_ms_ - now_ms()));
  if (!deferred_results_.empty()) {
    t = std::min<int64_t>(t, std::max<int64_t>(0, std::max(deferred_due_ms_, write_retry_at_ms_) - now_ms()));
  }
  if (!to_fail_.empty()) {
    // Tried by flush_results(), which waits out a write back-off first.
    t = std::min<int64_t>(t, std::max<int64_t>(0, std::max(to_fail_due_ms_, write_retry_at_ms_) - now_ms()));
  }
  if (capacity_blocked_ && !reserve_opened_ && guc_urgent_reserve > 0 && blocked_since_ms_) {
    t = std::min<int64_t>(t, std::max<int64_t>(0, *blocked_since_ms_ + guc_reserve_wait_ms - now_ms()));
  }
  const int64_t now = now_ms();
  // A generate() call refused only reserved slots is served again once its
  // own wait opens them (after that, only a freed slot helps: no timer).
  for (const auto& [key, since] : refused_since_ms_) {
    if (key.first < 0 && since + guc_reserve_wait_ms > now) t = std::min<int64_t>(t, since + guc_reserve_wait_ms - now);
  }
  for (const auto& [key, due] : sync_retry_due_ms_) {
    if (due > now) t = std::min<int64_t>(t, due - now);
  }
  for (const SentHandoff& h : sent_unclaimed_) {
    if (l2_asks_.waiting(h.tag)) continue;  // Redis's reply (or its timeout) wakes us
    t = std::min<int64_t>(t, handoff_next_look_ms(parked_.count(h.tag) > 0, h.sent_ms, now, kHandoffTiming));
  }
  if (int64_t redis = cache_l2_next_event_ms(); redis >= 0) t = std::min<int64_t>(t, redis);
  if (int64_t give_up = l2_asks_.ms_until_give_up(now, guc_redis_command_timeout_ms); give_up >= 0) {
    t = std::min<int64_t>(t, give_up);
  }
  if (table_after_commit_polled()) {
    // From now: the youngest commit still pending is looked at soonest.
    for (const auto& [xid, since] : table_after_commit_) {
      t = std::min<int64_t>(t, commit_look_interval_ms(now - since, kHandoffTiming));
    }
  }
  for (size_t i = 0; i < fleet_.size(); i++) {
    const MemberInfo& m = fleet_.info(i);
    const Endpoint& e = fleet_.endpoints()[i];
    if (guc_metrics_interval_ms > 0 && e.enabled && !m.scrape_in_flight) {
      t = std::min<int64_t>(t, std::max<int64_t>(0, m.next_scrape_ms - now));
    }
    if (e.breaker.open_until_ms() > now) t = std::min<int64_t>(t, e.breaker.open_until_ms() - now);
  }
  t = std::min<int64_t>(t, std::max<int64_t>(0, next_stats_ms_ - now));
  return static_cast<long>(t);
}

void Dispatcher::configure_router() {
  RouterConfig rc;
  rc.w_load = guc_weight_load;
  rc.w_latency = guc_weight_latency;
  rc.w_error = guc_weight_errors;
  rc.affinity = guc_affinity;
  rc.affinity_epsilon = guc_affinity_epsilon;
  rc.urgent_reserve = guc_urgent_reserve;
  rc.reserve_wait_ms = guc_reserve_wait_ms;
  router_.configure(rc);
  prefix_types_ = std::string(",") + (guc_prefix_affinity_types ? guc_prefix_affinity_types : "") + ",";
  prefix_types_.erase(std::remove(prefix_types_.begin(), prefix_types_.end(), ' '), prefix_types_.end());
}


void Dispatcher::reload_endpoints_if_changed(bool force, bool log_only_changes) {
  uint64 generation = pg_atomic_read_u64(&shared_state().endpoints_generation);
  if (!force && generation == endpoints_generation_) return;
  // Marked seen only once loaded: a load that fails (a lock wait timing
  // out) is tried again on the next round, not skipped until the next change.
  const bool changed = fleet_.reload(load_endpoints(), breaker_config(), guc_latency_alpha);
  std::set<std::string> keys;
  for (size_t i = 0; i < fleet_.size(); i++) keys.insert(fleet_.info(i).config.api_key);
  http_.forget_tokens_except(keys);
  endpoints_generation_ = generation;
  publish_fleet_signature();
  // Who changed the table can wait for this to reach their commit's generation.
  pg_atomic_write_u64(&shared_state().endpoints_loaded, generation);
  maybe_more_work_ = true;
  next_stats_ms_ = 0;
  int enabled = 0, slots = 0;
  for (const auto& e : fleet_.endpoints()) {
    if (e.enabled) {
      enabled++;
      slots += e.max_concurrent;
    }
  }
  if (log_only_changes && !changed) return;
  pg_call([&] {
    ereport(LOG, (errmsg("npc_scale dispatcher: fleet loaded: %d endpoints, %d enabled, %d slots",
                         static_cast<int>(fleet_.size()), enabled, slots)));
  });
}

int64_t Dispatcher::waited_for_slot_ms(const std::pair<int64_t, uint64_t>& key) const {
  auto it = refused_since_ms_.find(key);
  return it == refused_since_ms_.end() ? 0 : now_ms() - it->second;
}

void Dispatcher::waiting_for_slot(const std::pair<int64_t, uint64_t>& key) {
  refused_since_ms_.emplace(key, now_ms());  // the first refusal counts
}

std::optional<size_t> Dispatcher::route(int priority, std::optional<uint64_t> affinity_key,
                                        std::optional<int> avoid_gpu, int64_t own_wait_ms) {
  RouteRequest req;
  req.priority = priority;
  req.affinity_key = affinity_key;
  req.avoid_gpu = avoid_gpu;
  // How long work has been waiting for a slot: the fleet's saturation signal
  // that opens the urgent reserve to everyone.
  req.waited_ms = std::max<int64_t>(blocked_since_ms_ ? now_ms() - *blocked_since_ms_ : 0, own_wait_ms);
  uint64_t hits = router_.affinity_hits(), misses = router_.affinity_misses();
  auto d = router_.pick(fleet_.endpoints(), req, now_ms());
  SharedState& s = shared_state();
  if (router_.affinity_hits() != hits) pg_atomic_fetch_add_u64(&s.affinity_hits, 1);
  if (router_.affinity_misses() != misses) pg_atomic_fetch_add_u64(&s.affinity_misses, 1);
  if (!d) return std::nullopt;
  return d->index;
}

int Dispatcher::free_capacity() const { return Router::free_capacity(fleet_.endpoints(), now_ms()); }

bool Dispatcher::send(size_t index, InFlight info, const std::string& prompt,
                      const GenerationParams& params, int priority, long timeout_ms) {
  const EndpointConfig& ep = fleet_.info(index).config;
  Endpoint& state = fleet_.endpoints()[index];
  info.gpu_id = ep.gpu_id;
  info.member = fleet_.info(index).serial;
  info.api = ep.api == "chat" ? Api::chat : Api::completions;
  info.choices = params.choices;
  HttpRequest req;
  req.tag = next_tag_++;
  req.url = ep.base_url + api_path(info.api);
  req.body = build_request_body(info.api, ep.model, prompt, params, priority, ep.send_priority);
  req.bearer_token = ep.api_key;
  // Room for the longest answer generate() may return, in its JSON reply.
  req.max_response_bytes = std::max(req.max_response_bytes, 4 * static_cast<size_t>(guc_max_response_bytes));
  req.timeout_ms = timeout_ms;
  info.times_out_at_ms = now_ms() + timeout_ms;
  info.timeout_ms = timeout_ms;
  uint64_t tag = req.tag;
  http_.start(std::move(req));
  fleet_.note_send(index, now_ms());
  state.in_flight++;
  state.requests++;
  if (!info.cache_key.empty()) in_flight_by_key_[info.cache_key] = tag;
  in_flight_.emplace(tag, std::move(info));
  return true;
}

// Health probes for half-open breakers, and scrapes of vLLM's /metrics so the
// router sees load from other clients of the same servers. Both are ordinary
// requests on the same event loop: a slow endpoint delays nothing else.
void Dispatcher::start_probes_and_scrapes() {
  const int64_t now = now_ms();
  for (size_t i = 0; i < fleet_.size(); i++) {
    Endpoint& e = fleet_.endpoints()[i];
    MemberInfo& m = fleet_.info(i);
    if (m.removed) continue;
    if (e.enabled && !m.probe_in_flight && e.breaker.probe_due(now)) {
      e.breaker.probe_started(now);
      m.probe_in_flight = true;
      get_from_endpoint(Work::probe, e, m, "/health", 2000);
    }
    // Scraping switched off: the last reading would stand for ever.
    if (guc_metrics_interval_ms <= 0 && !m.scrape_in_flight) e.remote_running = e.remote_waiting = -1;
    if (guc_metrics_interval_ms > 0 && e.enabled && !m.scrape_in_flight && now >= m.next_scrape_ms) {
      m.scrape_in_flight = true;
      m.next_scrape_ms = now + guc_metrics_interval_ms;
      get_from_endpoint(Work::scrape, e, m, "/metrics", std::min(guc_metrics_interval_ms, 2000));
    }
  }
}

// A GET of ours to an endpoint, with its api_key (a gateway in front may
// want it even on /health).
void Dispatcher::get_from_endpoint(Work kind, Endpoint& e, MemberInfo& m, const char* path,
                                   long timeout_ms) {
  HttpRequest req;
  req.tag = next_tag_++;
  req.url = m.config.base_url + path;
  req.bearer_token = m.config.api_key;
  req.timeout_ms = timeout_ms;
  InFlight info;
  info.kind = kind;
  info.gpu_id = e.gpu_id;
  info.member = m.serial;
  const uint64_t tag = req.tag;
  in_flight_.emplace(tag, info);
  try {
    http_.start(std::move(req));
  } catch (...) {
    // Not started (out of memory in libcurl): no reply will clear its
    // flags, and an endpoint whose flag stuck would never be probed or
    // scraped again. The probe counts as failed; the breaker probes later.
    in_flight_.erase(tag);
    if (kind == Work::scrape) {
      m.scrape_in_flight = false;
    } else {
      m.probe_in_flight = false;
      e.breaker.probe_finished(false, now_ms());
    }
    throw;
  }
}

void Dispatcher::finish_probe_or_scrape(const InFlight& f, const HttpResult& r) {
  auto index = fleet_.index_of_member(f.member);
  if (!index) return;
  Endpoint& e = fleet_.endpoints()[*index];
  MemberInfo& m = fleet_.info(*index);
  if (f.kind == Work::probe && r.transport_ok && r.status == 200 && !m.config.model.empty()) {
    get_from_endpoint(Work::probe_model, e, m, "/v1/models", 2000);  // alive: does it serve our model, to us?
    return;  // still probing
  }
  if (f.kind == Work::probe || f.kind == Work::probe_model) {
    m.probe_in_flight = false;
    // A server without /v1/models (404) is judged by its /health alone.
    bool healthy = r.transport_ok && (r.status == 200 || (f.kind == Work::probe_model && r.status == 404));
    if (healthy && r.status == 200 && f.kind == Work::probe_model && !model_is_served(r.body, m.config.model)) {
      healthy = false;
      m.last_error = "health probe: the server answers, but its /v1/models does not list model \"" +
                     m.config.model + "\"";
      m.last_error_at_ms = GetCurrentTimestamp();
    } else if (!healthy && f.kind == Work::probe_model) {
      m.last_error = "health probe: GET /v1/models: " +
                     (r.transport_ok ? "HTTP " + std::to_string(r.status) : r.error);
      m.last_error_at_ms = GetCurrentTimestamp();
    }
    e.breaker.probe_finished(healthy, now_ms());
    if (healthy && !m.removed) {  // a draining member's server may be no row's now: not logged
      maybe_more_work_ = true;  // capacity is back
      pg_call([&] {
        ereport(LOG, (errmsg("npc_scale dispatcher: GPU %d is healthy again, breaker closed", f.gpu_id)));
      });
    }
    return;
  }
  m.scrape_in_flight = false;
  if (guc_metrics_interval_ms > 0 && r.transport_ok && r.status == 200) {
    // Clamped: a broken or hostile server's 5e9 must not wrap into an idle GPU.
    auto count = [](const std::optional<double>& v) {
      return v ? static_cast<int>(std::clamp(*v, 0.0, 1e6)) : -1;
    };
    VllmLoad load = parse_vllm_load(r.body);
    e.remote_running = count(load.running);
    e.remote_waiting = count(load.waiting);
  } else {
    e.remote_running = e.remote_waiting = -1;  // unknown: route on our own counts
  }
}

// A request's timeout is kept inside the lease, so a lease only lapses when
// the dispatcher itself is gone.
long within_lease(long timeout_ms) { return std::min(timeout_ms, attempt_limit_ms()); }

// The timeout a request gets when it chooses none.
long default_request_timeout_ms() { return within_lease(guc_request_timeout_ms); }

// Feeds one finished request into its endpoint's breaker and statistics.
void Dispatcher::record_outcome(const InFlight& f, const HttpResult& r, bool success,
                                const std::string& error) {
  auto index = fleet_.index_of_member(f.member);
  if (!index) return;
  Endpoint& e = fleet_.endpoints()[*index];
  MemberInfo& m = fleet_.info(*index);
  const int64_t now = now_ms();
  // Less time than a request gets by default is the request's own choice.
  const EndpointVerdict verdict =
      judge_endpoint(r, success, {f.timeout_ms, default_request_timeout_ms(), fleet_.silent_ms(*index, now)});
  fleet_.release(*index, now);
  if (r.transport_ok) fleet_.note_reply(*index, now);
  const int64_t sent = now - static_cast<int64_t>(r.elapsed_ms);
  if (verdict == EndpointVerdict::healthy) {
    e.latency.add(r.elapsed_ms);
    const BreakerState before = e.breaker.state(now);
    e.breaker.record_success(now, sent);
    // A success can trip it too: the one that brings the window up to
    // breaker_min_requests with the error rate over the limit.
    if (before == BreakerState::closed && e.breaker.state(now) != BreakerState::closed) {
      e.latency.reset();
      if (!m.removed) {
        log_lines_.push_back("GPU " + std::to_string(f.gpu_id) +
                             " breaker opened: error rate over npc_scale.breaker_error_rate (last error: " +
                             m.last_error + ")");
      }
    }
    return;
  }
  e.errors++;
  m.last_error = error;
  m.last_error_at_ms = GetCurrentTimestamp();
  BreakerState before = e.breaker.state(now);
  if (verdict == EndpointVerdict::rate_limited) {
    e.breaker.record_rate_limited(now, CircuitBreaker::retry_after_ms(r.retry_after_s));
  } else if (verdict == EndpointVerdict::unavailable) {
    e.breaker.record_unavailable(now, CircuitBreaker::retry_after_ms(r.retry_after_s), sent);
  } else if (verdict == EndpointVerdict::failing) {
    e.breaker.record_failure(now, sent);
  }
  // Neutral (other 4xx, a timeout the request chose): the request, not the endpoint.
  if (before == BreakerState::closed && e.breaker.state(now) != BreakerState::closed) {
    // Judged afresh once it is back: urgent work tries it one request at a
    // time, not by the speed it had before it broke.
    if (verdict == EndpointVerdict::failing || verdict == EndpointVerdict::unavailable) e.latency.reset();
    // Logged once the reply is handled (see flush_log_lines).
    if (!m.removed) log_lines_.push_back("GPU " + std::to_string(f.gpu_id) + " breaker opened: " + error);
  }
}

// A log line checks for interrupts, and a cancel landing there throws:
// lines written while a reply is being handled wait until it is, so the
// reply (its decision, followers, slot, cache fill) is never lost half-way.
void Dispatcher::flush_log_lines() {
  std::vector<std::string> lines;
  lines.swap(log_lines_);
  for (const std::string& line : lines) {
    pg_call([&] { ereport(LOG, (errmsg("npc_scale dispatcher: %s", line.c_str()))); });
  }
}

void Dispatcher::publish_stats() {
  next_stats_ms_ = now_ms() + 100;
  fleet_.prune_drained();
  SharedState& s = shared_state();
  const int64_t now = now_ms();
  std::vector<EndpointStat> stats;
  stats.reserve(std::min<size_t>(fleet_.size(), kMaxEndpointStats));
  for (size_t i = 0; i < fleet_.size() && stats.size() < static_cast<size_t>(kMaxEndpointStats); i++) {
    Endpoint& e = fleet_.endpoints()[i];
    const MemberInfo& m = fleet_.info(i);
    // A draining member is shown while it has requests in flight, not for a
    // probe or scrape it still waits for.
    if (m.removed && e.in_flight <= 0) continue;
    EndpointStat& st = stats.emplace_back();
    memset(&st, 0, sizeof(st));
    st.gpu_id = e.gpu_id;
    st.enabled = e.enabled;
    st.draining = m.removed;
    BreakerState b = e.breaker.state(now);
    st.breaker = b == BreakerState::closed ? 0 : b == BreakerState::open ? 1 : 2;
    st.in_flight = e.in_flight;
    st.max_concurrent = e.max_concurrent;
    st.requests = static_cast<int64>(e.requests);
    st.errors = static_cast<int64>(e.errors);
    st.error_rate = e.breaker.error_rate();
    st.ema_ms = e.latency.ema_ms();
    st.p50_ms = e.latency.percentile(50);
    st.p99_ms = e.latency.percentile(99);
    st.remote_running = e.remote_running;
    st.remote_waiting = e.remote_waiting;
    copy_text_clipped(st.last_error, sizeof(st.last_error), m.last_error.c_str());
    st.last_error_at = m.last_error_at_ms;
    st.endpoint_hash = DatumGetInt32(
        hash_any(reinterpret_cast<const unsigned char*>(m.config.base_url.data()), static_cast<int>(m.config.base_url.size())));
  }
  SpinLockAcquire(&s.stats_mutex);
  s.endpoint_stat_count = static_cast<int>(stats.size());
  if (!stats.empty()) memcpy(s.endpoint_stats, stats.data(), sizeof(EndpointStat) * stats.size());
  SpinLockRelease(&s.stats_mutex);
}

// Followers of a request that will not be answered go back where they came
// from: decisions to the queue (no back-off: nothing failed), generate()
// calls to their pending slot.
void Dispatcher::requeue_followers(const std::vector<InFlight>& followers) {
  for (const InFlight& f : followers) {
    if (f.kind == Work::decision) {
      // Never sent: its claim's attempt is not counted (or waiting on other
      // requests could use up max_attempts).
      DecisionResult back{f.decision_id, f.attempts, "queued", "", "", std::nullopt, 0, ""};
      back.release = true;
      pending_results_.push_back(std::move(back));
      maybe_more_work_ = true;
    } else if (f.kind == Work::sync) {
      SyncSlot* slot = sync_slot(f.slot);
      SpinLockAcquire(&slot->mutex);
      const bool requeued = slot->ticket == f.ticket && slot->state == SyncState::running;
      if (requeued) slot->state = SyncState::pending;
      SpinLockRelease(&slot->mutex);
      // Served on the next round, which may come after this round's
      // serve_sync_slots(): that round must not wait for another wake-up.
      if (requeued) SetLatch(MyLatch);
    }
  }
}

// The answer to `key` if this process knows it: in L1, or answered this
// round and not cached yet (the cache is filled after the answers' write, and
// the request is no longer in flight to coalesce with). Without the second
// look, an identical call arriving in that window is sent to a GPU again.
std::optional<std::string> Dispatcher::known_answer(const std::string& key) const {
  for (const CacheFill& c : cache_fills_) {
    if (c.key == key) return c.response;
  }
  return cache_read_l1(key);
}

// generate() slots and their spinlock. The lock guards only the state word
// (a few loads and stores: no allocation, no copy of a request or an answer
// under it). What makes the rest safe without it: a running slot belongs to
// the dispatcher until the dispatcher ends it. Its owner can only mark it
// abandoned, never free or refill it, so its request, answer and error areas
// are read and written outside the lock; only a free slot changes hands.

// Whether the slot still serves this call (running, same ticket). An
// abandoned one is freed here, for the next caller.
bool sync_slot_is_ours(SyncSlot* slot, uint64 ticket) {
  SpinLockAcquire(&slot->mutex);
  if (slot->ticket != ticket) {
    SpinLockRelease(&slot->mutex);
    return false;
  }
  if (slot->state == SyncState::abandoned) {
    slot->state = SyncState::free;
    slot->owner_procno = -1;
    SpinLockRelease(&slot->mutex);
    pg_call([] { ConditionVariableBroadcast(&shared_state().slot_freed_cv); });
    return false;
  }
  const bool ours = slot->state == SyncState::running;
  SpinLockRelease(&slot->mutex);
  return ours;
}

// Moves a slot the dispatcher serves to `next` (done, failed, or pending to
// be served again) and wakes its caller; an abandoned one is freed instead.
void end_sync_service(SyncSlot* slot, uint64 ticket, SyncState next) {
  SpinLockAcquire(&slot->mutex);
  if (slot->ticket == ticket && slot->state == SyncState::running) {
    slot->state = next;
    SpinLockRelease(&slot->mutex);
    if (next != SyncState::pending) pg_call([&] { ConditionVariableBroadcast(&slot->done_cv); });
    return;
  }
  SpinLockRelease(&slot->mutex);
  (void)sync_slot_is_ours(slot, ticket);  // frees it if it was abandoned
}

// The answer fits (at most max_response_bytes); the slot is ours.
void set_sync_answer(SyncSlot* slot, uint64 ticket, const std::string& response) {
  memcpy(sync_slot_response(slot), response.data(), response.size());
  slot->response_len = static_cast<int>(response.size());
  end_sync_service(slot, ticket, SyncState::done);
}

// A generate() call answered without a request. False only if the answer is
// too big for its slot (then it is sent as usual); a call that ended
// meanwhile needs nothing more.
bool Dispatcher::answer_sync_slot(const InFlight& f, const std::string& response) {
  if (response.size() > static_cast<size_t>(guc_max_response_bytes)) return false;
  SyncSlot* slot = sync_slot(f.slot);
  if (sync_slot_is_ours(slot, f.ticket)) set_sync_answer(slot, f.ticket, response);
  return true;
}

// avoid_gpu: a retry's last endpoint. Joining a request in flight there
// would bring back that endpoint's answer (a refusal of its own
// configuration, an error) when another endpoint could be asked now.
bool Dispatcher::coalesce(const InFlight& info, int64_t until_ms, std::optional<int> avoid_gpu) {
  if (info.cache_key.empty()) return false;
  auto it = in_flight_by_key_.find(info.cache_key);
  if (it == in_flight_by_key_.end()) return false;
  auto leader = in_flight_.find(it->second);
  if (leader == in_flight_.end() || leader->second.times_out_at_ms > until_ms) return false;
  if (avoid_gpu && leader->second.gpu_id == *avoid_gpu && another_endpoint(leader->second.member)) {
    return false;
  }
  leader->second.followers.push_back(info);
  return true;
}

// A request that ends stops leading its key only if it still does: an
// identical one sent later (not joined: a shorter deadline, another
// endpoint) leads from then on and must stay findable.
void Dispatcher::forget_leader(const std::string& cache_key, uint64_t tag) {
  if (cache_key.empty()) return;
  auto it = in_flight_by_key_.find(cache_key);
  if (it != in_flight_by_key_.end() && it->second == tag) in_flight_by_key_.erase(it);
}

// Models and APIs of the enabled endpoints, sorted: part of every generation
// cache key, so a fleet that changes model does not serve the old model's answers.
void Dispatcher::publish_fleet_signature() {
  std::vector<std::string> parts;
  for (size_t i = 0; i < fleet_.size(); i++) {
    if (!fleet_.endpoints()[i].enabled) continue;
    parts.push_back(fleet_.info(i).config.model + "/" + fleet_.info(i).config.api);
  }
  std::sort(parts.begin(), parts.end());
  parts.erase(std::unique(parts.begin(), parts.end()), parts.end());
  std::string sig;
  for (const auto& p : parts) sig += (sig.empty() ? "" : ",") + p;
  fleet_signature_ = fleet_signature_digest(sig);  // fits shared memory whole
  SharedState& s = shared_state();
  SpinLockAcquire(&s.stats_mutex);
  strlcpy(s.fleet_signature, fleet_signature_.c_str(), sizeof(s.fleet_signature));
  SpinLockRelease(&s.stats_mutex);
}

void Dispatcher::serve_sync_slots() {
  SharedState& s = shared_state();
  for (int i = 0; i < s.sync_slot_count; i++) {
    SyncSlot* slot = sync_slot(i);
    // Take a pending slot (running) under the lock, then read and route its
    // request without it: see sync_slot_is_ours().
    SpinLockAcquire(&slot->mutex);
    const SyncState state = slot->state;
    const uint64 ticket = slot->ticket;
    if (state == SyncState::abandoned) {
      slot->state = SyncState::free;
      slot->owner_procno = -1;
      SpinLockRelease(&slot->mutex);
      for (auto it = in_flight_.begin(); it != in_flight_.end(); ++it) {
        if (it->second.kind == Work::sync && it->second.slot == i && it->second.ticket == ticket) {
          cancel_request(it->first);
          break;
        }
      }
      pg_call([&] { ConditionVariableBroadcast(&s.slot_freed_cv); });
      continue;
    }
    if (state != SyncState::pending) {
      SpinLockRelease(&slot->mutex);
      continue;
    }
    slot->state = SyncState::running;
    SpinLockRelease(&slot->mutex);

    try {
      serve_taken_slot(i, ticket);
    } catch (const std::exception& e) {
      fail_sync_slot(i, ticket, e.what());  // taken: it must end, not wait for nobody
    }
  }
}

// A generate() call just taken (running): route it and send it, answer it
// from what is known, coalesce it, or end it.
void Dispatcher::serve_taken_slot(int i, uint64 ticket) {
  SyncSlot* slot = sync_slot(i);
  std::optional<int> avoid = slot->attempts > 0 ? std::optional<int>(slot->gpu_id) : std::nullopt;
  // generate() has no NPC: its affinity key is the prompt's prefix.
  uint64_t prefix_key = XXH3_64bits(sync_slot_prompt(slot),
                                    std::min<size_t>(static_cast<size_t>(slot->prompt_len), 64));
  const std::pair<int64_t, uint64_t> wait_key{-1 - i, ticket};
  auto pick = route(slot->priority, prefix_key, avoid, waited_for_slot_ms(wait_key));
  if (!pick) {
    // generate() does not wait in a queue: a fleet that cannot serve it
    // is an error now; one at its caps is waited for (statement_timeout
    // and cancel bound the wait).
    switch (fleet_.availability(now_ms())) {
      case FleetAvailability::none_enabled:
        fail_sync_slot(i, ticket, "no enabled GPU endpoint: add one to npc_scale.gpu_endpoints");
        break;
      case FleetAvailability::all_failing:
        fail_sync_slot(i, ticket,
                       "no GPU endpoint is accepting requests: every enabled one is failing "
                       "(circuit breaker open); last error: " + fleet_.last_failure());
        break;
      case FleetAvailability::available:
        // Every endpoint is at its cap, or only reserved slots are free: in
        // that case a wake-up after reserve_wait opens them to this call.
        waiting_for_slot(wait_key);
        end_sync_service(slot, ticket, SyncState::pending);
        return;
    }
    routed(wait_key);
    return;
  }
  routed(wait_key);
  if (auto due = sync_retry_due_ms_.find(wait_key); due != sync_retry_due_ms_.end()) {
    if (fleet_.endpoints()[*pick].gpu_id == slot->gpu_id && now_ms() < due->second) {
      pg_atomic_fetch_add_u64(&shared_state().sync_retries_held, 1);
      end_sync_service(slot, ticket, SyncState::pending);  // the GPU that just failed: after its back-off
      return;
    }
    sync_retry_due_ms_.erase(due);
  }
  slot->attempts++;
  std::string prompt(sync_slot_prompt(slot), slot->prompt_len);
  std::string params_json(sync_slot_params(slot), slot->params_len);
  InFlight info;
  info.kind = Work::sync;
  info.sync = true;
  info.slot = i;
  info.ticket = ticket;
  info.attempts = slot->attempts;
  info.cache_key = slot->cache_key;
  info.cache_ttl_s = slot->cache_ttl_s;
  GenerationParams params = parse_params(params_json);
  if (!info.cache_key.empty()) {
    // Keyed by the fleet it is served on: the caller made its key from the
    // signature last published, which a reload this round may have replaced.
    info.cache_key = generation_key(generation_cache_key(fleet_signature_, prompt, params));
  }
  // The caller's own cache lookup may have come just before this answer
  // was known (see known_answer()).
  if (!info.cache_key.empty()) {
    try {
      if (auto answer = known_answer(info.cache_key); answer && answer_sync_slot(info, *answer)) return;
    } catch (const std::exception&) {
      // L1 unreadable: the call goes to a GPU as usual
    }
  }
  long timeout = params.timeout_ms.value_or(guc_request_timeout_ms);
  if (coalesce(info, now_ms() + timeout, avoid)) return;  // an identical request is in flight: share its answer
  send(*pick, info, prompt, params, slot->priority, timeout);
}

// The affinity key of a decision: its NPC, or for the decision types listed
// in npc_scale.prefix_affinity_types, the first 64 bytes of its prompt.
std::optional<uint64_t> Dispatcher::affinity_key(const ClaimedDecision& d) const {
  if (!d.decision_type.empty() && prefix_types_.find("," + d.decision_type + ",") != std::string::npos) {
    return XXH3_64bits(d.prompt.data(), std::min<size_t>(d.prompt.size(), 64));
  }
  return XXH3_64bits(&d.npc_id, sizeof(d.npc_id));
}

// The decision's own timeout (or the GUC), cut to its deadline, inside the lease.
long request_timeout_ms(const GenerationParams& params, std::optional<int64_t> deadline_in_ms) {
  long timeout = params.timeout_ms.value_or(guc_request_timeout_ms);
  if (deadline_in_ms) timeout = std::min<long>(timeout, std::max<int64_t>(1, *deadline_in_ms));
  return within_lease(timeout);
}

std::vector<int64_t> Dispatcher::held_back_ids() const {
  std::vector<int64_t> ids;
  for (const SentHandoff& h : sent_unclaimed_) ids.push_back(h.id);
  for (const std::vector<DecisionResult>* results : {&pending_results_, &deferred_results_}) {
    for (const DecisionResult& r : *results) ids.push_back(r.id);
  }
  ids.insert(ids.end(), unwritable_.begin(), unwritable_.end());
  for (const RefusedRow& r : to_fail_) ids.push_back(r.id);
  // Claimed, answered, and waiting for Redis's word on the same key: the ask
  // may outlast the lease (redis_command_timeout is not bound by it), and
  // recovering the row would throw the answer away and send it again.
  for (const auto& [tag, p] : parked_) {
    if (p.info.kind == Work::decision && p.info.attempts > 0) ids.push_back(p.info.decision_id);
  }
  return ids;
}

// Rows lease recovery must pass over: those held back, and those in flight,
// whose timeout ends inside the lease on the steady clock while the lease is
// judged by the wall clock, which can step forward (NTP, a VM resumed):
// recovering one would send it again, or fail it as "lease expired" while its
// answer is on the way.
std::vector<int64_t> Dispatcher::not_recoverable_ids() const {
  std::vector<int64_t> ids = held_back_ids();
  for (const auto& [tag, f] : in_flight_) {
    if (f.kind == Work::decision && f.attempts > 0) ids.push_back(f.decision_id);
    for (const InFlight& follower : f.followers) {
      if (follower.kind == Work::decision && follower.attempts > 0) ids.push_back(follower.decision_id);
    }
  }
  return ids;
}

// Claims as many queued decisions as there are free slots and sends them
// the moment the claim commits.
void Dispatcher::claim_and_send() {
  maybe_more_work_ = false;
  // A finishing request sets maybe_more_work_ again when slots are full.
  int limit = std::min(free_capacity(), guc_claim_batch);
  if (limit <= 0) {
    set_capacity_blocked(true);  // work may be waiting: look again when a slot frees
    return;
  }
  ClaimResult claimed = claim_decisions(limit, guc_lease_timeout_s, held_back_ids());
  for (const auto& d : claimed.running) claimed_since_take_.insert(d.id);
  // A full batch means more may be queued behind it: claim again next round.
  set_capacity_blocked(static_cast<int>(claimed.running.size()) >= limit);
  maybe_more_work_ = capacity_blocked_;
  bool handed_back = false;
  for (auto& d : claimed.running) {
    InFlight info;
    info.decision_id = d.id;
    info.attempts = d.attempts;
    try {
      GenerationParams params = parse_params(d.params);
      const long timeout = request_timeout_ms(params, d.deadline_in_ms);
      CachePolicy policy = cache_policy(params, guc_cache_default_ttl_s);
      if (policy.use) {
        info.cache_key = generation_key(generation_cache_key(fleet_signature_, d.prompt, params));
        info.cache_ttl_s = policy.ttl_s;
        CacheLayer layer = CacheLayer::none;
        std::optional<std::string> hit;
        // L1 here; L2 is asked once the request is out (never waited for);
        // the L3 table would need a transaction here. A hit the hand-off
        // path promoted from L2 was counted there already.
        const bool promoted = promoted_from_l2_.erase(d.id) > 0;
        if ((hit = cache_read_l1(info.cache_key))) {
          layer = promoted ? CacheLayer::l2 : CacheLayer::l1;
          if (!promoted) cache_count(layer);
        }
        if (hit) {
          DecisionResult res{d.id, d.attempts, "done", *hit, "", std::nullopt, 0};
          res.cache_layer = cache_layer_name(layer);
          pending_results_.push_back(std::move(res));
          continue;
        }
        if (coalesce(info, now_ms() + timeout, d.last_gpu_id)) {
          cache_count(CacheLayer::none);  // answered with the identical request in flight
          continue;
        }
      }
      const std::pair<int64_t, uint64_t> wait_key{d.id, 0};
      auto pick = route(d.priority, affinity_key(d), d.last_gpu_id, waited_for_slot_ms(wait_key));
      if (!pick) {
        // No slot it may use (the only free ones are the urgent reserve, or
        // an endpoint was disabled since the count): hand it back at once,
        // attempt not counted, and wait for a slot.
        waiting_for_slot(wait_key);
        DecisionResult back{d.id, d.attempts, "queued", "", "no free GPU slot", std::nullopt, 0};
        back.release = true;
        pending_results_.push_back(std::move(back));
        handed_back = true;
        continue;
      }
      routed(wait_key);
      const uint64_t tag = next_tag_;
      std::string l2_key = info.cache_key;
      send(*pick, info, d.prompt, params, d.priority, timeout);
      if (!l2_key.empty()) {
        ask_l2_after_send_.push_back({tag, d.id, std::move(l2_key), InvalidTransactionId, d.attempts});
      }
    } catch (const Error& e) {
      // The row itself is wrong (its params, say): no attempt can succeed.
      pending_results_.push_back({d.id, d.attempts, "failed", "", e.what(), std::nullopt, 0});
    } catch (const std::exception& e) {
      // Something of ours failed (out of memory, a curl handle): the
      // decision is retried like a transient endpoint error, and fails with
      // this reason once its attempts are used up.
      if (d.attempts >= guc_max_attempts) {
        pending_results_.push_back({d.id, d.attempts, "failed", "", std::string("gave up after ") +
                                    std::to_string(d.attempts) + " attempts: " + e.what(), std::nullopt, 0});
      } else {
        pending_results_.push_back({d.id, d.attempts, "queued", "", e.what(), std::nullopt, guc_retry_base_ms});
      }
    }
  }
  if (handed_back) {
    // Look again when a slot frees (or the reserve opens), not at once.
    set_capacity_blocked(true);
    maybe_more_work_ = false;
  }
  // Last: what is claimed is out first, whatever a log line here raises.
  if (!claimed.refused.empty()) {
    if (!handed_back) maybe_more_work_ = true;  // the claim ran without them: there may be more
    fail_refusing_rows(claimed.refused, "the decision could not be claimed");
  }
}

void Dispatcher::set_capacity_blocked(bool blocked) {
  capacity_blocked_ = blocked;
  if (!blocked) {
    blocked_since_ms_.reset();
    reserve_opened_ = false;
  } else if (!blocked_since_ms_) {
    blocked_since_ms_ = now_ms();
    reserve_opened_ = false;
  }
}

void Dispatcher::send_handed_off() {
  std::vector<HandoffEntry> entries = handoff_take(MyDatabaseId);
  // A row can commit, and be claimed by the table path, before its entry is
  // taken here (back-to-back commits): the table path owns it then. Its
  // entry was written at PRE_COMMIT, before the claim could see the row, so
  // it is among those taken now.
  std::unordered_set<int64_t> claimed;
  claimed.swap(claimed_since_take_);
  if (entries.empty()) return;
  const int64_t now_us = GetCurrentTimestamp();
  for (HandoffEntry& e : entries) {
    if (claimed.count(e.id) > 0) continue;
    // The table path keeps priority order when work is waiting, answers
    // cache hits and joins identical requests in flight (coalescing).
    if (capacity_blocked_) {
      to_table_after_commit(e.xid);
      continue;
    }
    try {
      GenerationParams params = parse_params(e.params);
      if (e.deadline_us && *e.deadline_us <= now_us) {
        maybe_more_work_ = true;  // expired by the next housekeeping look
        continue;
      }
      InFlight info;
      info.decision_id = e.id;  // attempts: set by the claim
      CachePolicy policy = cache_policy(params, guc_cache_default_ttl_s);
      if (policy.use) {
        std::string key = generation_key(generation_cache_key(fleet_signature_, e.prompt, params));
        if (in_flight_by_key_.count(key) > 0 || known_answer(key)) {
          to_table_after_commit(e.xid);
          continue;
        }
        info.cache_key = std::move(key);  // not in L1: this request will fill the cache
        info.cache_ttl_s = policy.ttl_s;
      }
      ClaimedDecision d;
      d.id = e.id;
      d.priority = e.priority;
      d.npc_id = e.npc_id;
      d.decision_type = std::move(e.decision_type);
      d.prompt = std::move(e.prompt);
      auto pick = route(d.priority, affinity_key(d), std::nullopt);
      if (!pick) {
        to_table_after_commit(e.xid);
        set_capacity_blocked(true);
        continue;
      }
      std::optional<int64_t> deadline_in_ms;
      if (e.deadline_us) deadline_in_ms = (*e.deadline_us - now_us) / 1000;
      const long timeout = request_timeout_ms(params, deadline_in_ms);
      const uint64_t tag = next_tag_;
      std::string l2_key = info.cache_key;  // cacheable: Redis is asked once this is out
      send(*pick, info, d.prompt, params, d.priority, timeout);
      sent_unclaimed_.push_back({d.id, tag, e.xid, now_ms()});
      pg_atomic_fetch_add_u64(&shared_state().handoff_sent, 1);
      if (!l2_key.empty()) ask_l2_after_send_.push_back({tag, d.id, std::move(l2_key), e.xid, 0});
    } catch (const std::exception&) {
      to_table_after_commit(e.xid);  // the table path reports what is wrong with it
    }
  }
  http_.perform();  // out now, not after the next wait
}

// After the sends and the answers' write of this round, Redis is asked for
// the round's cacheable requests without waiting; take_l2_answers() reads
// the answers when they have arrived.
void Dispatcher::ask_l2_after_send() {
  std::vector<L2Check> checks;
  checks.swap(ask_l2_after_send_);
  if (checks.empty()) return;
  std::vector<std::string> keys;
  for (const L2Check& c : checks) keys.push_back(c.key);
  const uint64_t ticket = cache_ask_l2(keys);
  l2_asks_.asked(ticket, std::move(checks), now_ms());
}

// A Redis hit withdraws its request. Handed off and not claimed: the hit is
// in L1 now, and the table path answers from there once the row's
// transaction has committed. Claimed: answered here from the hit. A miss
// lets the request go on to its claim or its parked answer.
void Dispatcher::take_l2_answers() {
  // Every request is released (no longer waiting) before any is acted on:
  // none can be left waiting for an answer already taken.
  std::vector<L2Outcome> outcomes =
      l2_asks_.take(cache_take_l2_answers(), now_ms(), guc_redis_command_timeout_ms);
  for (auto& [c, hit] : outcomes) {
    if (hit && c.attempts == 0) {
      promoted_from_l2_[c.id] = now_ms();
      cancel_request(c.tag);  // also drops an answer parked for it
      sent_unclaimed_.erase(std::remove_if(sent_unclaimed_.begin(), sent_unclaimed_.end(),
                                           [&](const SentHandoff& h) { return h.tag == c.tag; }),
                            sent_unclaimed_.end());
      pg_atomic_fetch_add_u64(&shared_state().handoff_unclaimed, 1);
      to_table_after_commit(c.xid);
    } else if (hit) {
      cancel_request(c.tag);
      DecisionResult res{c.id, c.attempts, "done", std::move(*hit), "", std::nullopt, 0};
      res.cache_layer = cache_layer_name(CacheLayer::l2);
      pending_results_.push_back(std::move(res));
    } else if (c.attempts > 0) {
      // A claimed request's answer waited for this miss.
      auto parked = parked_.find(c.tag);
      if (parked == parked_.end()) continue;
      Parked p = std::move(parked->second);
      parked_.erase(parked);
      finish(p.info, p.reply);
    }
  }
}

// Redis's connection is in the wait set only while an ask is pending (its
// SET replies alone need no wake-up). Added again on every wait, since a
// reconnect may reuse a closed descriptor's number.
void Dispatcher::watch_redis() {
  const int fd = cache_l2_wait_fd();
  if (fd >= 0) {
    loop_fds_.watch(fd);
    redis_watched_fd_ = fd;
  } else if (redis_watched_fd_ >= 0) {
    loop_fds_.unwatch(redis_watched_fd_);
    redis_watched_fd_ = -1;
  }
}

void Dispatcher::to_table_after_commit(TransactionId xid) { table_after_commit_.emplace(xid, now_ms()); }

// Rows the hand-off left to the table path can be claimed once their
// transaction has committed; the commit itself wakes nobody (the hand-off
// already did, at PRE_COMMIT), so look on the commit poll timer.
// While the fleet is full they are not polled, but housekeeping still drops
// the ended ones (even_when_full): through an outage with the game still
// enqueuing, the set would grow by every committing transaction.
void Dispatcher::release_to_table_path(bool even_when_full) {
  if (!table_after_commit_polled() && !(even_when_full && !table_after_commit_.empty())) return;
  for (auto it = table_after_commit_.begin(); it != table_after_commit_.end();) {
    const TxnOutcome outcome = handoff_commit_state(it->first);
    if (outcome == TxnOutcome::in_progress) {
      ++it;
      continue;
    }
    if (outcome == TxnOutcome::committed) maybe_more_work_ = true;
    it = table_after_commit_.erase(it);  // aborted: no rows
  }
}

// Handed-off requests, by the rules of core/handoff_policy: claimed (running,
// leased) once in flight 5 ms; one answered sooner skips the claim and its
// answer's write claims it (queued to done, attempt 1). Either way only once
// its transaction is known to have committed; dropped if it aborted.
void Dispatcher::claim_handed_off() {
  if (sent_unclaimed_.empty()) return;
  std::vector<SentHandoff> sent;
  sent.swap(sent_unclaimed_);
  std::vector<SentHandoff> to_claim;
  const int64_t now = now_ms();
  for (const SentHandoff& h : sent) {
    if (l2_asks_.waiting(h.tag)) {
      sent_unclaimed_.push_back(h);  // its L2 answer first: a hit withdraws it
      continue;
    }
    auto parked = parked_.find(h.tag);
    const bool answered = parked != parked_.end();
    if (!handoff_needs_outcome(answered, h.sent_ms, now, kHandoffTiming)) {
      sent_unclaimed_.push_back(h);  // inside its claim delay: the timer brings us back
      continue;
    }
    switch (handoff_step(answered, handoff_commit_state(h.xid))) {
      case HandoffStep::wait:  // still committing: looked at again on the poll timer
        sent_unclaimed_.push_back(h);
        break;
      case HandoffStep::answer_directly: {
        Parked p = std::move(parked->second);
        parked_.erase(parked);
        p.info.attempts = 1;  // a handed-off row is new: this was its first attempt
        p.info.from_queued = true;
        finish(p.info, p.reply);
        break;
      }
      case HandoffStep::claim:
        to_claim.push_back(h);
        break;
      case HandoffStep::drop:  // its commit failed after PRE_COMMIT: no row
        cancel_request(h.tag);
        pg_atomic_fetch_add_u64(&shared_state().handoff_unclaimed, 1);
        break;
    }
  }
  if (to_claim.empty()) return;
  std::vector<int64_t> ids;
  for (const SentHandoff& h : to_claim) ids.push_back(h.id);
  std::unordered_map<int64_t, int> claimed;
  try {
    claimed = claim_by_ids(ids, guc_lease_timeout_s);
  } catch (...) {
    // Not claimed: cancel them; they are still queued and the table path
    // sends them again.
    for (const SentHandoff& h : to_claim) cancel_request(h.tag);
    throw;
  }
  for (const SentHandoff& h : to_claim) {
    auto c = claimed.find(h.id);
    auto it = in_flight_.find(h.tag);
    if (c != claimed.end() && it != in_flight_.end()) {
      it->second.attempts = c->second;
    } else {
      // Claimed on the table path already, or cancelled since its commit.
      cancel_request(h.tag);
      pg_atomic_fetch_add_u64(&shared_state().handoff_unclaimed, 1);
    }
  }
}

// After the answers are written: a cache fill (shared memory, Redis) is not
// on the path of the answer the game waits for.
void Dispatcher::fill_cache() {
  std::vector<CacheFill> fills;
  fills.swap(cache_fills_);
  for (const CacheFill& c : fills) {
    try {
      cache_store(c.key, c.response, c.ttl_s);
    } catch (const std::exception& e) {
      log_warning(std::string("cache store failed: ") + e.what());
    }
  }
}

void Dispatcher::cancel_request(uint64_t tag) {
  parked_.erase(tag);
  l2_asks_.release(tag);
  auto it = in_flight_.find(tag);
  if (it == in_flight_.end()) return;
  http_.cancel(tag);
  if (auto idx = fleet_.index_of_member(it->second.member)) {
    fleet_.release(*idx, now_ms());
  }
  if (capacity_blocked_) maybe_more_work_ = true;  // a slot freed: work may be waiting for it
  forget_leader(it->second.cache_key, tag);
  requeue_followers(it->second.followers);
  in_flight_.erase(it);
}

// cancel_decision() committed since the last look: a claimed decision it
// cancelled needs its GPU request no more (the answer would be fenced out):
// aborting it frees the endpoint's slot now rather than when the GPU answers.
// A request that also serves coalesced followers goes on for them.
void Dispatcher::abort_cancelled() {
  const uint64 generation = pg_atomic_read_u64(&shared_state().cancels_generation);
  if (generation == cancels_seen_) return;
  std::unordered_map<int64_t, uint64_t> tag_of;
  for (const auto& [tag, f] : in_flight_) {
    if (f.kind == Work::decision && f.attempts > 0 && f.followers.empty()) tag_of.emplace(f.decision_id, tag);
  }
  std::vector<int64_t> ids;
  for (const auto& [id, tag] : tag_of) ids.push_back(id);
  for (int64_t id : cancelled_among(ids)) {
    cancel_request(tag_of.at(id));
    pg_atomic_fetch_add_u64(&shared_state().requests_cancelled, 1);
  }
  cancels_seen_ = generation;  // not before: a failed look is taken again next round
}

// Writes finished decisions in one durable transaction, then wakes waiters.
// Results for rows another session holds locked come back deferred and are
// tried again every kDeferredWriteMs, skipping locked rows: the loop never
// waits on a game session's lock.
void Dispatcher::flush_results() {
  const int64_t now = now_ms();
  if (now < write_retry_at_ms_) return;
  if (!deferred_results_.empty() && now >= deferred_due_ms_) write_batch(deferred_results_, /*skip_locked=*/true);
  write_batch(pending_results_, /*skip_locked=*/false);
  if (!to_fail_.empty() && now_ms() >= to_fail_due_ms_) {
    std::vector<std::string> lines;
    fail_rows_to_fail(lines);
    for (const std::string& line : lines) log_warning(line);
  }
}

void Dispatcher::write_batch(std::vector<DecisionResult>& source, bool skip_locked) {
  if (source.empty()) return;
  std::vector<DecisionResult> batch;
  batch.swap(source);
  WriteOutcome out;
  try {
    out = write_results(batch, skip_locked);
  } catch (...) {
    // Keep them for a later round (housekeeping drops them if the
    // extension is gone).
    source.insert(source.end(), batch.begin(), batch.end());
    write_backoff_ms_ = std::clamp(write_backoff_ms_ * 2, kWriteBackoffMinMs, kWriteBackoffMaxMs);
    write_retry_at_ms_ = now_ms() + write_backoff_ms_;
    throw;
  }
  if (out.unwritten.empty()) {
    write_backoff_ms_ = 0;
    write_retry_at_ms_ = 0;
  } else {
    // Failed part-way: the rest waits as a failed batch would.
    source.insert(source.end(), out.unwritten.begin(), out.unwritten.end());
    write_backoff_ms_ = std::clamp(write_backoff_ms_ * 2, kWriteBackoffMinMs, kWriteBackoffMaxMs);
    write_retry_at_ms_ = now_ms() + write_backoff_ms_;
  }
  // A retry's not_before is now() + retry_ms at its write, not at its reply:
  // a look timed from the reply finds it not due yet, and nothing would look
  // again before housekeeping's (up to a second late).
  for (const DecisionResult& r : batch) {
    if (r.status != "queued" || r.retry_ms <= 0) continue;
    const int64_t due = now_ms() + r.retry_ms;
    if (!retry_due_ms_ || due < *retry_due_ms_) retry_due_ms_ = due;
  }
  wake_awaiting(out.finished);
  if (!out.deferred.empty()) {
    if (!skip_locked) pg_atomic_fetch_add_u64(&shared_state().results_deferred, out.deferred.size());
    deferred_results_.insert(deferred_results_.end(), out.deferred.begin(), out.deferred.end());
    deferred_due_ms_ = now_ms() + kDeferredWriteMs;
  }
  fail_refusing_rows(out.refused, "the answer could not be recorded");  // last: it logs
  if (!out.error.empty()) log_warning("answers not written yet: " + out.error);
}

// Rows that refused an answer's write, a claim, recovery or expiry (a game's
// trigger or constraint): failed, saying why; one that refuses that too is
// left alone (unwritable_) so it cannot stop those statements for every
// other row. State first, log lines last (a cancel can land in one).
// A row given up on stays excluded only while it is still queued or
// running: one finished, cancelled or deleted by others is forgotten (the
// set goes with every claim, recovery and expiry as an array).
void Dispatcher::prune_unwritable() {
  if (unwritable_.empty() || now_ms() < next_unwritable_prune_ms_) return;
  next_unwritable_prune_ms_ = now_ms() + 60000;
  const std::vector<int64_t> ids(unwritable_.begin(), unwritable_.end());
  const std::vector<int64_t> open = unfinished_among(ids);
  unwritable_ = std::unordered_set<int64_t>(open.begin(), open.end());
}

void Dispatcher::fail_refusing_rows(const std::vector<RefusedRow>& rows, const std::string& what) {
  if (rows.empty()) return;
  std::vector<std::string> lines;
  for (const RefusedRow& r : rows) {
    to_fail_.push_back({r.id, what + ": " + r.error});
    lines.push_back("decision " + std::to_string(r.id) + ": " + what + " (" + r.error + "); failing it");
  }
  pg_atomic_fetch_add_u64(&shared_state().results_refused, rows.size());
  fail_rows_to_fail(lines);
  for (const std::string& line : lines) log_warning(line);
}

// Each failure is a transaction of its own; if one throws, all are tried
// again (a row failed already is not failed twice: its status is final).
void Dispatcher::fail_rows_to_fail(std::vector<std::string>& lines) {
  std::vector<RefusedRow> batch;
  batch.swap(to_fail_);
  std::vector<RefusedRow> still_refused;
  std::vector<RefusedRow> locked;
  std::vector<int64_t> failed;
  try {
    failed = fail_refused(batch, still_refused, locked);
  } catch (...) {
    to_fail_.insert(to_fail_.end(), batch.begin(), batch.end());
    to_fail_due_ms_ = now_ms() + kDeferredWriteMs;
    throw;
  }
  to_fail_ = std::move(locked);
  to_fail_due_ms_ = now_ms() + kDeferredWriteMs;
  pg_atomic_fetch_add_u64(&shared_state().results_refused, still_refused.size());
  for (const RefusedRow& r : still_refused) {
    unwritable_.insert(r.id);
    lines.push_back("decision " + std::to_string(r.id) + " refuses every write (" + r.error +
                    "); left as it is until the dispatcher restarts");
  }
  wake_awaiting(failed);
}

void Dispatcher::handle_finished() {
  // One at a time off a queue of our own: if handling one throws (a
  // pg_cancel_backend() landing in a LOG line, say), the rest are handled
  // next round instead of being lost with their slots still held.
  for (HttpResult& http : http_.take_finished()) finished_.push_back(std::move(http));
  while (!finished_.empty()) {
    HttpResult http = std::move(finished_.front());
    finished_.pop_front();
    auto it = in_flight_.find(http.tag);
    if (it == in_flight_.end()) continue;
    InFlight f = std::move(it->second);
    in_flight_.erase(it);
    forget_leader(f.cache_key, http.tag);  // before anything below can throw
    if (f.kind == Work::probe || f.kind == Work::probe_model || f.kind == Work::scrape) {
      finish_probe_or_scrape(f, http);
      continue;
    }
    const uint64_t tag = http.tag;
    AttemptReply r = read_attempt(f.api, std::move(http), f.choices);
    // A freed slot matters only if work was left waiting for one; new work
    // arrives with a latch wake-up.
    if (capacity_blocked_) maybe_more_work_ = true;
    AttemptOutcome o = resolve_attempt(r, f.attempts, retry_policy(), tag);
    // An answer cut at the request's own max_tokens was served well.
    record_outcome(f, r.http, o.kind == AttemptOutcome::Kind::done || r.completion.request_at_fault,
                   o.error);
    if (o.kind == AttemptOutcome::Kind::done && !f.cache_key.empty()) {
      cache_fills_.push_back({f.cache_key, o.response, f.cache_ttl_s});
    }
    for (InFlight follower : f.followers) {
      follower.gpu_id = f.gpu_id;
      follower.member = f.member;
      follower.api = f.api;
      finish(follower, r);
    }
    if (f.kind == Work::decision && (f.attempts == 0 || l2_asks_.waiting(tag))) {
      // Handed off and not claimed yet (its transaction is still
      // committing): answered once the claim succeeds. Claimed, with its L2
      // ask pending: answered once Redis says miss (a hit answers instead).
      f.followers.clear();
      parked_.emplace(tag, Parked{std::move(f), std::move(r)});
      continue;
    }
    finish(f, r);
  }
  flush_log_lines();
}

void Dispatcher::finish(const InFlight& f, const AttemptReply& r) {
  if (f.kind == Work::sync) {
    finish_sync(f, r);
  } else {
    finish_decision(f, r);
  }
}

// Whether an endpoint other than `member` has room for a request now (its
// breaker closed, a slot free): a request one endpoint refused is asked
// there, not sent back to the same one because the others are busy.
bool Dispatcher::another_endpoint(uint64_t member) {
  const int64_t now = now_ms();
  for (size_t i = 0; i < fleet_.size(); i++) {
    Endpoint& e = fleet_.endpoints()[i];
    const MemberInfo& m = fleet_.info(i);
    if (m.serial != member && !m.removed && e.breaker.allows_requests(now) && e.has_slot()) {
      return true;
    }
  }
  return false;
}

// What a reply means for the request it answers; a rejection goes once to
// another endpoint with room (ask_elsewhere_once).
AttemptOutcome Dispatcher::resolve(const InFlight& f, const AttemptReply& r, uint64_t jitter_seed) {
  AttemptOutcome o = resolve_attempt(r, f.attempts, retry_policy(), jitter_seed);
  if (o.rejected) o = ask_elsewhere_once(std::move(o), f.attempts, retry_policy(), another_endpoint(f.member));
  return o;
}

void Dispatcher::finish_decision(const InFlight& f, const AttemptReply& r) {
  AttemptOutcome o = resolve(f, r, static_cast<uint64_t>(f.decision_id));
  DecisionResult res;
  res.id = f.decision_id;
  res.attempts = f.attempts;
  res.gpu_id = f.gpu_id;
  res.from_queued = f.from_queued;
  res.elapsed_ms = static_cast<int64_t>(r.http.elapsed_ms);
  switch (o.kind) {
    case AttemptOutcome::Kind::done:
      res.status = "done";
      res.response = std::move(o.response);
      res.finish_reason = std::move(o.finish_reason);
      break;
    case AttemptOutcome::Kind::retry:
      res.status = "queued";
      res.error = std::move(o.error);
      res.retry_ms = o.retry_delay_ms;  // its look is timed once the row is written (write_batch)
      break;
    case AttemptOutcome::Kind::failed:
      res.status = "failed";
      res.error = std::move(o.error);
      break;
  }
  pending_results_.push_back(std::move(res));
}

void Dispatcher::finish_sync(const InFlight& f, const AttemptReply& r) {
  AttemptOutcome o = resolve(f, r, f.ticket);
  if (o.kind == AttemptOutcome::Kind::done &&
      o.response.size() > static_cast<size_t>(guc_max_response_bytes)) {
    o.kind = AttemptOutcome::Kind::failed;
    o.error = "answer of " + std::to_string(o.response.size()) +
              " bytes exceeds npc_scale.max_response_bytes (" +
              std::to_string(guc_max_response_bytes) + ")";
  }
  SyncSlot* slot = sync_slot(f.slot);
  if (!sync_slot_is_ours(slot, f.ticket)) return;  // the caller gave up meanwhile
  slot->gpu_id = f.gpu_id;
  switch (o.kind) {
    case AttemptOutcome::Kind::retry:
      // Served again on the next pass: elsewhere at once if possible, on
      // the same GPU after the back-off (else a one-GPU fleet would spend
      // every attempt within a millisecond).
      sync_retry_due_ms_[{-1 - f.slot, f.ticket}] = now_ms() + o.retry_delay_ms;
      end_sync_service(slot, f.ticket, SyncState::pending);
      break;
    case AttemptOutcome::Kind::done:
      set_sync_answer(slot, f.ticket, o.response);
      break;
    case AttemptOutcome::Kind::failed:
      copy_text_clipped(slot->error, sizeof(slot->error), o.error.c_str());
      slot->rejected = o.rejected;
      end_sync_service(slot, f.ticket, SyncState::failed);
      break;
  }
}

void Dispatcher::fail_sync_slot(int index, uint64 ticket, const std::string& error) {
  SyncSlot* slot = sync_slot(index);
  if (!sync_slot_is_ours(slot, ticket)) return;
  copy_text_clipped(slot->error, sizeof(slot->error), error.c_str());
  end_sync_service(slot, ticket, SyncState::failed);
}

void Dispatcher::housekeeping() {
  next_housekeeping_ms_ = now_ms() + kHousekeepingMs;
  release_to_table_path(/*even_when_full=*/true);
  // A promoted key whose decision was not claimed (cancelled, or claimed
  // elsewhere) is forgotten; its answer stays in L1 regardless.
  for (auto it = promoted_from_l2_.begin(); it != promoted_from_l2_.end();) {
    it = now_ms() - it->second > 60000 ? promoted_from_l2_.erase(it) : std::next(it);
  }
  // Work that waited long ago and was then answered, cancelled or expired
  // elsewhere; one still waiting merely restarts its wait.
  const int64_t forget_after_ms = std::max<int64_t>(60000, 2 * static_cast<int64_t>(guc_reserve_wait_ms));
  for (auto it = refused_since_ms_.begin(); it != refused_since_ms_.end();) {
    it = now_ms() - it->second > forget_after_ms ? refused_since_ms_.erase(it) : std::next(it);
  }
  for (auto it = sync_retry_due_ms_.begin(); it != sync_retry_due_ms_.end();) {
    it = now_ms() - it->second > 60000 ? sync_retry_due_ms_.erase(it) : std::next(it);
  }
  if (!extension_ready()) {
    pending_results_.clear();
    deferred_results_.clear();
    unwritable_.clear();  // ids of a dropped table: a re-created one reuses them
    to_fail_.clear();
    return;
  }
  prune_unwritable();
  // A change to gpu_endpoints that no wake-up announced (one committed by
  // COMMIT PREPARED: its session forgot it at PREPARE) is found within a
  // minute.
  if (now_ms() >= next_fleet_check_ms_) {
    next_fleet_check_ms_ = now_ms() + 60000;
    reload_endpoints_if_changed(/*force=*/true, /*log_only_changes=*/true);
  }
  int requeued = 0;
  std::vector<RefusedRow> refused;
  wake_awaiting(recover_leases(false, guc_max_attempts, &requeued, not_recoverable_ids(), &refused));
  fail_refusing_rows(refused, "its lapsed lease could not be recovered");
  // A safety net, not the mechanism: commits wake the dispatcher at once;
  // this look per second only bounds the cost of a wake-up ever lost.
  maybe_more_work_ = true;
  refused.clear();
  wake_awaiting(expire_queued(held_back_ids(), &refused));
  fail_refusing_rows(refused, "it could not be expired");
  auto retry = next_retry_in_ms();
  if (retry) {
    int64_t due = now_ms() + std::max<int64_t>(0, *retry);
    if (!retry_due_ms_ || due < *retry_due_ms_) retry_due_ms_ = due;
  }
}

}  // namespace
}  // namespace npc_scale

void npc_scale_dispatcher_main(Datum) {
  npc_scale::guarded([] {
    npc_scale::Dispatcher dispatcher;
    dispatcher.run();
  });
}
