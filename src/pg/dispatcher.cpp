// The dispatcher background worker: takes queued NPC decisions and
// generate() calls to the GPU fleet and writes the answers back.
//
// One event loop: the worker latch (new work committed, fleet changed,
// generate() slot filled, SIGHUP/SIGTERM) and libcurl's sockets (through one
// epoll descriptor) wake the same WaitLatchOrSocket. A rolling window of
// requests is in flight, bounded per endpoint by max_concurrent; a new request
// starts as soon as a slot frees. Only what can be sent now is claimed, so
// waiting work stays in the table in priority order. Results are written in
// small batched transactions; no transaction is ever open across network I/O.
#include <algorithm>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "core/attempt.hpp"
#include "core/generation.hpp"
#include "core/http_client.hpp"
#include "core/router.hpp"
#include "decision_store.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "shared_state.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
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
constexpr long kNoExtensionWaitMs = 1000;

int64_t now_ms() { return GetCurrentTimestamp() / 1000; }

void log_warning(const std::string& what) {
  pg_call([&] { ereport(WARNING, (errmsg("npc_scale dispatcher: %s", what.c_str()))); });
}

struct InFlight {
  bool sync = false;
  int64_t decision_id = 0;  // queued work
  int attempts = 0;
  int slot = -1;            // generate() work
  uint64 ticket = 0;
  int gpu_id = 0;
  Api api = Api::completions;
};

class Dispatcher {
 public:
  void run();

 private:
  void start_up();
  void tick(int wake_events);
  void reload_endpoints_if_changed(bool force = false);
  std::vector<EndpointLoad> loads() const;
  bool send(int gpu_index, InFlight info, const std::string& prompt, const GenerationParams& params,
            int priority, long timeout_ms);
  void serve_sync_slots();
  void claim_and_send();
  void flush_results();
  void handle_finished();
  void finish_decision(const InFlight& f, const HttpResult& r);
  void finish_sync(const InFlight& f, const HttpResult& r);
  void fail_sync_slot(int index, uint64 ticket, const std::string& error);
  void housekeeping();
  void wake_waiters(const std::vector<int64_t>& finished);
  long wait_timeout_ms() const;
  RetryPolicy retry_policy() const {
    return RetryPolicy{guc_max_attempts, guc_retry_base_ms, guc_retry_max_ms};
  }

  HttpClient http_;
  Router router_;
  std::vector<EndpointConfig> endpoints_;
  std::map<int, int> in_flight_by_gpu_;  // survives reloads: removed endpoints drain
  uint64 endpoints_generation_ = 0;
  std::unordered_map<uint64_t, InFlight> in_flight_;
  uint64_t next_tag_ = 1;
  std::vector<DecisionResult> pending_results_;
  bool maybe_more_work_ = true;   // look at the queue on the next round
  bool capacity_blocked_ = false;  // the last look stopped at the fleet's capacity
  int64_t next_housekeeping_ms_ = 0;
  std::optional<int64_t> retry_due_ms_;  // earliest queued retry
};

void Dispatcher::run() {
  worker_startup(WorkerKind::dispatcher);
  start_up();
  for (;;) {
    int events = worker_wait(wait_timeout_ms(), http_.epoll_fd(), WL_SOCKET_READABLE);
    try {
      tick(events);
    } catch (const std::exception& e) {
      // A failed transaction (e.g. the extension dropped mid-way) is logged
      // and retried on the next tick; it never takes the worker down.
      log_warning(e.what());
      maybe_more_work_ = true;
    }
  }
}

void Dispatcher::start_up() {
  // Every statement of the dispatcher touches a small batch of rows by
  // primary key. A hash join would instead read every running row (and the
  // dead index entries behind them) per batch; keep the planner on nested
  // loops for this process only.
  pg_call([] {
    SetConfigOption("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION);
    SetConfigOption("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION);
  });
  // Idle until CREATE EXTENSION npc_scale has run in this database.
  while (!store_ready()) {
    worker_set_state(WorkerState::idle, "waiting for CREATE EXTENSION npc_scale");
    worker_wait(kNoExtensionWaitMs);
  }
  // generate() calls that a previous dispatcher was serving are lost with it.
  SharedState& s = shared_state();
  for (int i = 0; i < s.sync_slot_count; i++) {
    SyncSlot* slot = sync_slot(i);
    SpinLockAcquire(&slot->mutex);
    bool orphan = slot->state == SyncState::running;
    uint64 ticket = slot->ticket;
    SpinLockRelease(&slot->mutex);
    if (orphan) fail_sync_slot(i, ticket, "the npc_scale dispatcher restarted while serving it");
  }
  // Decisions a previous dispatcher had claimed go back to the queue.
  int requeued = 0;
  wake_waiters(recover_leases(true, guc_max_attempts, &requeued));
  if (requeued > 0) {
    pg_call([&] {
      ereport(LOG, (errmsg("npc_scale dispatcher: %d decisions in flight at the last stop were "
                           "queued again", requeued)));
    });
  }
  reload_endpoints_if_changed(true);
  worker_set_state(WorkerState::idle);
}

void Dispatcher::tick(int wake_events) {
  if (wake_events & WL_LATCH_SET) maybe_more_work_ = true;
  http_.perform();
  handle_finished();
  reload_endpoints_if_changed();
  serve_sync_slots();
  if (retry_due_ms_ && now_ms() >= *retry_due_ms_) {
    retry_due_ms_.reset();
    maybe_more_work_ = true;
  }
  // Answers first: a claim can wait a few hundred microseconds, an answer
  // the game is waiting for should not wait for a claim.
  flush_results();
  if (maybe_more_work_) claim_and_send();
  if (now_ms() >= next_housekeeping_ms_) housekeeping();
  worker_set_state(in_flight_.empty() ? WorkerState::idle : WorkerState::busy,
                   in_flight_.empty() ? nullptr : "dispatching");
}

long Dispatcher::wait_timeout_ms() const {
  int64_t t = std::max<int64_t>(0, next_housekeeping_ms_ - now_ms());
  long curl = http_.next_timeout_ms();
  if (curl >= 0) t = std::min<int64_t>(t, curl);
  if (retry_due_ms_) t = std::min<int64_t>(t, std::max<int64_t>(0, *retry_due_ms_ - now_ms()));
  if (!pending_results_.empty()) t = 0;
  return static_cast<long>(t);
}

void Dispatcher::reload_endpoints_if_changed(bool force) {
  uint64 generation = pg_atomic_read_u64(&shared_state().endpoints_generation);
  if (!force && generation == endpoints_generation_) return;
  endpoints_generation_ = generation;
  endpoints_ = load_endpoints();
  maybe_more_work_ = true;
  int enabled = 0, slots = 0;
  for (const auto& e : endpoints_) {
    if (e.enabled) {
      enabled++;
      slots += e.max_concurrent;
    }
  }
  pg_call([&] {
    ereport(LOG, (errmsg("npc_scale dispatcher: fleet loaded: %d endpoints, %d enabled, %d slots",
                         static_cast<int>(endpoints_.size()), enabled, slots)));
  });
}

std::vector<EndpointLoad> Dispatcher::loads() const {
  std::vector<EndpointLoad> out;
  out.reserve(endpoints_.size());
  for (const auto& e : endpoints_) {
    auto it = in_flight_by_gpu_.find(e.gpu_id);
    out.push_back({e.gpu_id, it == in_flight_by_gpu_.end() ? 0 : it->second, e.max_concurrent,
                   e.enabled});
  }
  return out;
}

bool Dispatcher::send(int gpu_index, InFlight info, const std::string& prompt,
                      const GenerationParams& params, int priority, long timeout_ms) {
  const EndpointConfig& ep = endpoints_[gpu_index];
  info.gpu_id = ep.gpu_id;
  info.api = ep.api == "chat" ? Api::chat : Api::completions;
  HttpRequest req;
  req.tag = next_tag_++;
  req.url = ep.base_url + api_path(info.api);
  req.body = build_request_body(info.api, ep.model, prompt, params, priority, false);
  req.bearer_token = ep.api_key;
  req.timeout_ms = timeout_ms;
  uint64_t tag = req.tag;
  http_.start(std::move(req));
  in_flight_by_gpu_[ep.gpu_id]++;
  in_flight_.emplace(tag, info);
  return true;
}

void Dispatcher::serve_sync_slots() {
  SharedState& s = shared_state();
  for (int i = 0; i < s.sync_slot_count; i++) {
    SyncSlot* slot = sync_slot(i);
    SpinLockAcquire(&slot->mutex);
    SyncState state = slot->state;
    if (state == SyncState::abandoned) {
      uint64 ticket = slot->ticket;
      slot->state = SyncState::free;
      slot->owner_procno = -1;
      SpinLockRelease(&slot->mutex);
      for (auto it = in_flight_.begin(); it != in_flight_.end(); ++it) {
        if (it->second.sync && it->second.slot == i && it->second.ticket == ticket) {
          http_.cancel(it->first);
          in_flight_by_gpu_[it->second.gpu_id]--;
          in_flight_.erase(it);
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
    auto all = loads();
    bool any_enabled = std::any_of(all.begin(), all.end(), [](const EndpointLoad& l) { return l.enabled; });
    std::optional<int> avoid = slot->attempts > 0 ? std::optional<int>(slot->gpu_id) : std::nullopt;
    auto pick = router_.pick(all, avoid);
    uint64 ticket = slot->ticket;
    if (!pick) {
      SpinLockRelease(&slot->mutex);
      if (!any_enabled) {
        fail_sync_slot(i, ticket,
                       "no enabled GPU endpoint: add one to npc_scale.gpu_endpoints");
      }
      continue;  // every endpoint is at its cap: it waits for a free slot
    }
    slot->state = SyncState::running;
    slot->attempts++;
    int priority = slot->priority;
    std::string prompt(sync_slot_prompt(slot), slot->prompt_len);
    std::string params_json(sync_slot_params(slot), slot->params_len);
    InFlight info;
    info.sync = true;
    info.slot = i;
    info.ticket = ticket;
    info.attempts = slot->attempts;
    SpinLockRelease(&slot->mutex);
    try {
      GenerationParams params = parse_params(params_json);
      long timeout = params.timeout_ms.value_or(guc_request_timeout_ms);
      send(static_cast<int>(*pick), info, prompt, params, priority, timeout);
    } catch (const std::exception& e) {
      fail_sync_slot(i, ticket, e.what());
    }
  }
}

// Claims as many queued decisions as there are free slots and sends them
// the moment the claim commits.
void Dispatcher::claim_and_send() {
  maybe_more_work_ = false;
  // A finishing request sets maybe_more_work_ again when slots are full.
  int limit = std::min(Router::free_capacity(loads()), guc_claim_batch);
  if (limit <= 0) {
    capacity_blocked_ = true;  // work may be waiting: look again when a slot frees
    return;
  }
  const int lease_s = guc_lease_timeout_s;
  ClaimResult claimed = claim_decisions(limit, lease_s);
  // A full batch means more may be queued behind it: claim again next round.
  capacity_blocked_ = static_cast<int>(claimed.running.size()) >= limit;
  maybe_more_work_ = capacity_blocked_;
  // Keep every per-request timeout inside the lease, so a lease only lapses
  // when the dispatcher itself is gone.
  const long lease_cap_ms = std::max(1000L, (lease_s - 5) * 1000L);
  for (auto& d : claimed.running) {
    InFlight info;
    info.decision_id = d.id;
    info.attempts = d.attempts;
    try {
      GenerationParams params = parse_params(d.params);
      long timeout = params.timeout_ms.value_or(guc_request_timeout_ms);
      if (d.deadline_in_ms) timeout = std::min<long>(timeout, std::max<int64_t>(1, *d.deadline_in_ms));
      timeout = std::min(timeout, lease_cap_ms);
      auto pick = router_.pick(loads(), d.last_gpu_id);
      if (!pick) {
        // Capacity vanished (an endpoint was disabled between the count and
        // now): hand it back at once, without a back-off.
        pending_results_.push_back({d.id, d.attempts, "queued", "", "no free GPU slot", 0, 0});
        continue;
      }
      send(static_cast<int>(*pick), info, d.prompt, params, d.priority, timeout);
    } catch (const std::exception& e) {
      pending_results_.push_back({d.id, d.attempts, "failed", "", e.what(), 0, 0});
    }
  }
}

// Writes finished decisions in one durable transaction, then wakes waiters.
void Dispatcher::flush_results() {
  if (pending_results_.empty()) return;
  std::vector<DecisionResult> batch;
  batch.swap(pending_results_);
  try {
    wake_waiters(write_results(batch));
  } catch (...) {
    // Keep them for the next round (housekeeping drops them if the
    // extension is gone).
    pending_results_.insert(pending_results_.end(), batch.begin(), batch.end());
    throw;
  }
}

void Dispatcher::handle_finished() {
  for (HttpResult& r : http_.take_finished()) {
    auto it = in_flight_.find(r.tag);
    if (it == in_flight_.end()) continue;
    InFlight f = it->second;
    in_flight_.erase(it);
    if (--in_flight_by_gpu_[f.gpu_id] <= 0) in_flight_by_gpu_.erase(f.gpu_id);
    // A freed slot matters only if work was left waiting for one; new work
    // arrives with a latch wake-up.
    if (capacity_blocked_) maybe_more_work_ = true;
    if (f.sync) {
      finish_sync(f, r);
    } else {
      finish_decision(f, r);
    }
  }
}

void Dispatcher::finish_decision(const InFlight& f, const HttpResult& r) {
  AttemptOutcome o = resolve_attempt(f.api, r, f.attempts, retry_policy(),
                                     static_cast<uint64_t>(f.decision_id));
  DecisionResult res;
  res.id = f.decision_id;
  res.attempts = f.attempts;
  res.gpu_id = f.gpu_id;
  switch (o.kind) {
    case AttemptOutcome::Kind::done:
      res.status = "done";
      res.response = std::move(o.response);
      break;
    case AttemptOutcome::Kind::retry:
      res.status = "queued";
      res.error = std::move(o.error);
      res.retry_ms = o.retry_delay_ms;
      {
        int64_t due = now_ms() + o.retry_delay_ms;
        if (!retry_due_ms_ || due < *retry_due_ms_) retry_due_ms_ = due;
      }
      break;
    case AttemptOutcome::Kind::failed:
      res.status = "failed";
      res.error = std::move(o.error);
      break;
  }
  pending_results_.push_back(std::move(res));
}

void Dispatcher::finish_sync(const InFlight& f, const HttpResult& r) {
  AttemptOutcome o = resolve_attempt(f.api, r, f.attempts, retry_policy(), f.ticket);
  SyncSlot* slot = sync_slot(f.slot);
  SpinLockAcquire(&slot->mutex);
  if (slot->ticket != f.ticket || slot->state != SyncState::running) {
    // The caller gave up meanwhile: free the slot for the next one.
    if (slot->ticket == f.ticket && slot->state == SyncState::abandoned) {
      slot->state = SyncState::free;
      slot->owner_procno = -1;
      SpinLockRelease(&slot->mutex);
      pg_call([&] { ConditionVariableBroadcast(&shared_state().slot_freed_cv); });
      return;
    }
    SpinLockRelease(&slot->mutex);
    return;
  }
  slot->gpu_id = f.gpu_id;
  if (o.kind == AttemptOutcome::Kind::retry) {
    slot->state = SyncState::pending;  // served again on the next pass, elsewhere if possible
    SpinLockRelease(&slot->mutex);
    return;
  }
  if (o.kind == AttemptOutcome::Kind::done &&
      o.response.size() > static_cast<size_t>(guc_max_response_bytes)) {
    o.kind = AttemptOutcome::Kind::failed;
    o.error = "answer of " + std::to_string(o.response.size()) +
              " bytes exceeds npc_scale.max_response_bytes (" +
              std::to_string(guc_max_response_bytes) + ")";
  }
  if (o.kind == AttemptOutcome::Kind::done) {
    memcpy(sync_slot_response(slot), o.response.data(), o.response.size());
    slot->response_len = static_cast<int>(o.response.size());
    slot->state = SyncState::done;
  } else {
    strlcpy(slot->error, o.error.c_str(), sizeof(slot->error));
    slot->state = SyncState::failed;
  }
  SpinLockRelease(&slot->mutex);
  pg_call([&] { ConditionVariableBroadcast(&slot->done_cv); });
}

void Dispatcher::fail_sync_slot(int index, uint64 ticket, const std::string& error) {
  SyncSlot* slot = sync_slot(index);
  SpinLockAcquire(&slot->mutex);
  if (slot->ticket != ticket) {
    SpinLockRelease(&slot->mutex);
    return;
  }
  if (slot->state == SyncState::abandoned) {
    slot->state = SyncState::free;
    slot->owner_procno = -1;
    SpinLockRelease(&slot->mutex);
    pg_call([&] { ConditionVariableBroadcast(&shared_state().slot_freed_cv); });
    return;
  }
  strlcpy(slot->error, error.c_str(), sizeof(slot->error));
  slot->state = SyncState::failed;
  SpinLockRelease(&slot->mutex);
  pg_call([&] { ConditionVariableBroadcast(&slot->done_cv); });
}

void Dispatcher::housekeeping() {
  next_housekeeping_ms_ = now_ms() + kHousekeepingMs;
  if (!store_ready()) {
    pending_results_.clear();
    return;
  }
  int requeued = 0;
  wake_waiters(recover_leases(false, guc_max_attempts, &requeued));
  if (requeued > 0) maybe_more_work_ = true;
  wake_waiters(expire_queued());
  auto retry = next_retry_in_ms();
  if (retry) {
    int64_t due = now_ms() + std::max<int64_t>(0, *retry);
    if (!retry_due_ms_ || due < *retry_due_ms_) retry_due_ms_ = due;
  }
}

void Dispatcher::wake_waiters(const std::vector<int64_t>& finished) {
  if (finished.empty()) return;
  std::unordered_set<int64_t> ids(finished.begin(), finished.end());
  SharedState& s = shared_state();
  pg_atomic_uint64* w = waiters();
  for (int i = 0; i < s.waiter_count; i++) {
    uint64 id = pg_atomic_read_u64(&w[i]);
    if (id != 0 && ids.count(static_cast<int64_t>(id))) {
      pg_call([&] { SetLatch(&ProcGlobal->allProcs[i].procLatch); });
    }
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
