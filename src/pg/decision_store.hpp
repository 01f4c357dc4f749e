// The dispatcher's SQL against npc_scale.decision_queue and gpu_endpoints.
// Each function is one short transaction; none is ever open across network
// waits. Finished decisions are announced with NOTIFY npc_scale_decisions at
// the commit that finishes them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/attempt.hpp"
#include "core/fleet.hpp"

namespace npc_scale {


struct ClaimedDecision {
  int64_t id = 0;
  int attempts = 0;
  int priority = 5;
  std::string prompt;
  std::string params;
  std::optional<int64_t> deadline_in_ms;  // time left until the deadline
  std::optional<int> last_gpu_id;         // the endpoint of the previous attempt
  int64_t npc_id = 0;
  std::string decision_type;
};

// A row that refused one of the dispatcher's UPDATEs with an error of its
// own (a trigger or constraint of the game's; see is_row_error), and why.
struct RefusedRow {
  int64_t id = 0;
  std::string error;
};

struct ClaimResult {
  std::vector<ClaimedDecision> running;  // to send now
  std::vector<RefusedRow> refused;       // queued rows that refuse the claim: fail them
};


std::vector<EndpointConfig> load_endpoints();

// Claims up to `limit` queued decisions — best effective priority first
// (priority minus one step per npc_scale.priority_aging waited), then oldest,
// skipping rows locked by others and rows past their deadline (housekeeping
// expires those) — leased for lease_s seconds. Commits without waiting for
// the WAL flush (see the .cpp for why that is safe). Rows in `exclude` (sent
// from the handoff, not claimed yet) are left alone.
ClaimResult claim_decisions(int limit, int lease_s, const std::vector<int64_t>& exclude);

// Claims exactly these decisions if they are still queued (handed off at
// commit and already sent); returns id -> attempts of those claimed. A row
// another session holds locked is waited for briefly, then left unclaimed.
std::unordered_map<int64_t, int> claim_by_ids(const std::vector<int64_t>& ids, int lease_s);

struct WriteOutcome {
  std::vector<int64_t> finished;         // reached a final status: wake their waiters
  std::vector<DecisionResult> deferred;  // rows another session holds locked: write them later
  // Rows whose own write failed (a game's trigger or constraint refused it),
  // with the error: found by writing the batch one row per transaction, so
  // one such row never holds back the others' answers.
  std::vector<RefusedRow> refused;
  // Written one row per transaction, a row failed on an error of the
  // server's (disk, memory) after others were committed: those are above,
  // these are not written yet (retried later, as a failed batch), and why.
  std::vector<DecisionResult> unwritten;
  std::string error;
};

// Writes a batch of results, durably; a row is written only if it is still
// the same running claim (status running, same attempts) — or, for an
// unclaimed handed-off decision (from_queued), if it is still queued. A row
// another session holds locked is waited for briefly (20 ms) and then
// deferred; with skip_locked, not waited for at all. An error of the rows'
// own (see is_row_error) is isolated to its row (WriteOutcome::refused); any
// other error is thrown, for the whole batch to be tried again later.
WriteOutcome write_results(const std::vector<DecisionResult>& results, bool skip_locked = false);

// Running decisions whose lease lapsed (or all running ones, at start-up)
// go back to the queue, or fail after max_attempts. Returns final ids. Rows
// other sessions hold locked are left for the next look, and so are the
// `exclude` ids (the dispatcher holds an answer for them, not written yet).
std::vector<int64_t> recover_leases(bool all_running, int max_attempts, int* requeued,
                                    const std::vector<int64_t>& exclude = {},
                                    std::vector<RefusedRow>* refused = nullptr);

// Queued decisions past their deadline become expired (rows other sessions
// hold locked: at the next look), except the `exclude` ids (sent, or
// answered and not written yet). Returns their ids.
std::vector<int64_t> expire_queued(const std::vector<int64_t>& exclude,
                                   std::vector<RefusedRow>* refused = nullptr);

// Claims, lease recovery and expiry each run one UPDATE over many rows. When
// it fails on an error of its rows' own, each candidate row is tried alone
// (in a transaction rolled back) to find those that refuse; the statement is
// run again without them and they are reported in `refused`.

// Those of `ids` still queued or running.
std::vector<int64_t> unfinished_among(const std::vector<int64_t>& ids);

// Rows that refused a claim, recovery, expiry or their answer, each failed in
// a transaction of its own with its error as the reason (and NOTIFY).
// Returns the ids failed; those that refuse even that are left in
// `still_refused` (with that refusal), those whose lock wait ran out in
// `locked` (as given, to try again). A row finished meanwhile is neither.
std::vector<int64_t> fail_refused(const std::vector<RefusedRow>& rows, std::vector<RefusedRow>& still_refused,
                                  std::vector<RefusedRow>& locked);

// Those of `ids` whose decision is cancelled.
std::vector<int64_t> cancelled_among(const std::vector<int64_t>& ids);

// Earliest not_before of queued retries, as ms from now (nullopt: none).
std::optional<int64_t> next_retry_in_ms();

}  // namespace npc_scale
