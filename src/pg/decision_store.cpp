#include "decision_store.hpp"

#include <unordered_set>

#include "gucs.hpp"
#include "pg_text.hpp"
#include "spi.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
}

namespace npc_scale {

namespace {

constexpr const char* kChannel = "npc_scale_decisions";

void notify_finished(int64_t id) {
  std::string payload = std::to_string(id);
  pg_call([&] { Async_Notify(kChannel, payload.c_str()); });
}

// Statements that touch given rows find them with "id = ANY(<array>)" and
// write their status test as "(status = 'x') IS TRUE". Their plans are
// generic and cached, costed on whatever the statistics said (often: an
// empty queue). A join on id, or a plain status test that matches a partial
// index (WHERE status = 'queued' / 'running'), then planned as a scan of the
// whole index or of every queued/running entry, dead ones included, per
// batch: measured as the dispatcher's top cost under load. An index
// condition on the primary key reads only the rows asked for.

// A one-dimensional array of `type` from datums, null where marked.
Datum array_of(Oid type, const std::vector<Datum>& values, const std::vector<bool>& nulls) {
  return pg_call([&] {
    int16 len;
    bool byval;
    char align;
    get_typlenbyvalalign(type, &len, &byval, &align);
    bool* nb = static_cast<bool*>(palloc(sizeof(bool) * (nulls.size() + 1)));
    for (size_t i = 0; i < nulls.size(); i++) nb[i] = nulls[i];
    int dims[1] = {static_cast<int>(values.size())};
    int lbs[1] = {1};
    return PointerGetDatum(construct_md_array(const_cast<Datum*>(values.data()), nb, 1, dims, lbs,
                                              type, len, byval, align));
  });
}

Datum int8_array(const std::vector<int64_t>& ids) {
  std::vector<Datum> d;
  for (int64_t id : ids) d.push_back(Int64GetDatum(id));
  return array_of(INT8OID, d, std::vector<bool>(d.size(), false));
}

// Another session's row lock (cancel_decision() in a transaction left open,
// an admin's UPDATE) must not stall the dispatcher's one loop. Its row
// writes wait at most this long, then are redone without the locked rows
// (SKIP LOCKED), which are written on a later round. Every row lock here is
// FOR NO KEY UPDATE, what the UPDATEs themselves take (they never change the
// id): a game row referencing a decision by foreign key (KEY SHARE) blocks
// none of them.
constexpr const char* kLockWait = "20ms";

void bound_lock_wait() {
  pg_call([] {
    (void)set_config_option("lock_timeout", kLockWait, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
                            true, 0, false);
  });
}

// A claim is not worth a WAL flush: one lost in a crash only leaves its row
// queued; its answer was not written yet, so nothing can be answered twice.
void commit_claim_asynchronously() {
  pg_call([] {
    (void)set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
                            false);
  });
}

bool is_lock_timeout(const PgError& e) { return e.sqlerrcode() == ERRCODE_LOCK_NOT_AVAILABLE; }

struct ProbeDone {};  // thrown to roll a probe's transaction back

// Which of `ids` refuse `probe` (an UPDATE of the row $1), each tried in a
// transaction of its own that is rolled back. A row locked by another
// session is passed over (it is left alone by the statement's SKIP LOCKED).
template <typename Probe>
std::vector<RefusedRow> find_refusing(const std::vector<int64_t>& ids, Probe&& probe) {
  std::vector<RefusedRow> refused;
  for (int64_t id : ids) {
    try {
      in_transaction("npc_scale: look for rows refusing an update", [&] {
        bound_lock_wait();
        probe(id);
        // A deferred constraint trigger (or foreign key) of the game's
        // refuses at COMMIT, which a probe never reaches: what the probe
        // left pending is checked now.
        pg_call([] {
          if (SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) < 0) {
            elog(ERROR, "npc_scale: SET CONSTRAINTS ALL IMMEDIATE failed");
          }
        });
        throw ProbeDone{};
      });
    } catch (const ProbeDone&) {
    } catch (const PgError& e) {
      if (is_lock_timeout(e)) continue;
      if (!is_row_error(e)) throw;
      refused.push_back({id, e.what()});
    }
  }
  return refused;
}

// Runs `run(exclude)`; if it fails on a row error, finds the refusing rows
// among `candidates(exclude)` with `probe`, adds them to `refused` and runs
// it once more without them.
template <typename Run, typename Candidates, typename Probe>
void isolating_refusals(std::vector<int64_t> exclude, Run&& run, Candidates&& candidates, Probe&& probe,
                        std::vector<RefusedRow>* refused) {
  try {
    run(exclude);
    return;
  } catch (const PgError& e) {
    if (refused == nullptr || !is_row_error(e)) throw;
  }
  std::vector<RefusedRow> found = find_refusing(candidates(exclude), probe);
  if (found.empty()) {
    run(exclude);  // not reproduced row by row: this throws again, or it went through
    return;
  }
  for (const RefusedRow& r : found) exclude.push_back(r.id);
  refused->insert(refused->end(), found.begin(), found.end());
  run(exclude);
}

std::vector<int64_t> ids_of(uint64_t rows, int col) {
  std::vector<int64_t> ids;
  ids.reserve(rows);
  for (uint64_t i = 0; i < rows; i++) ids.push_back(spi_int(i, col).value_or(0));
  return ids;
}


// The claim's order: effective priority (the base one less a step per
// npc_scale.priority_aging waited, clamped to 0..10 before the cast: a row
// weeks old under a 1 ms aging, or from the future after a clock step,
// would overflow int and fail the whole claim), then age.
#define NPC_CLAIM_ORDER(aging)                                                                       \
  "CASE WHEN " aging " <= 0 THEN q.priority ELSE greatest(0, q.priority -"                           \
  "   least(10, greatest(0, floor(extract(epoch FROM now() - q.created_at) * 1000 / " aging ")))::int) END," \
  " q.id"
// The rows a claim looks at: two index scans, the best base priorities and
// the oldest, so aging works without reading the whole backlog.
#define NPC_CLAIM_CANDIDATES(limit, exclude)                                                 \
  "(SELECT id FROM npc_scale.decision_queue"                                                 \
  "  WHERE status = 'queued' AND (not_before IS NULL OR not_before <= now())"                \
  "    AND (deadline IS NULL OR deadline >= now()) AND id <> ALL (" exclude ")"              \
  "  ORDER BY priority, id LIMIT " limit ")"                                                 \
  " UNION "                                                                                  \
  "(SELECT id FROM npc_scale.decision_queue"                                                 \
  "  WHERE status = 'queued' AND (not_before IS NULL OR not_before <= now())"                \
  "    AND (deadline IS NULL OR deadline >= now()) AND id <> ALL (" exclude ")"              \
  "  ORDER BY id LIMIT " limit ")"
// What a claim sets ($2: the lease, in seconds).
#define NPC_CLAIM_SET                                                                        \
  "UPDATE npc_scale.decision_queue q SET status = 'running', attempts = q.attempts + 1,"     \
  "  leased_until = now() + make_interval(secs => $2),"                                      \
  "  started_at = coalesce(q.started_at, now()), not_before = NULL "
// What a claim returns of each row, as read_claimed() reads it.
#define NPC_CLAIM_RETURNING                                                     \
  "RETURNING q.id, q.attempts, q.priority, q.prompt, q.params::text,"           \
  "  (extract(epoch FROM q.deadline - now()) * 1000)::bigint, q.gpu_id, q.npc_id, q.decision_type"

void read_claimed(uint64_t n, ClaimResult& out);

// A unique or exclusion violation: the row conflicts with another one (a
// constraint of the game's such as "one running decision per NPC"), so it
// may go through later, or in another batch.
bool is_conflict(const PgError& e) {
  return e.sqlerrcode() == ERRCODE_UNIQUE_VIOLATION || e.sqlerrcode() == ERRCODE_EXCLUSION_VIOLATION;
}

// In the caller's transaction.
void claim_in_transaction(int limit, int lease_s, const std::vector<int64_t>& exclude, ClaimResult& out) {
  // Among the candidates the best effective priority wins.
  static SavedPlan plan(
      "WITH cand AS (" NPC_CLAIM_CANDIDATES("$1", "$4") "), "
      "c AS ("
      "  SELECT q.id FROM npc_scale.decision_queue q"
      "   WHERE q.id = ANY (ARRAY(SELECT id FROM cand)) AND (q.status = 'queued') IS TRUE"
      "   ORDER BY " NPC_CLAIM_ORDER("$3")
      "   LIMIT $1 FOR NO KEY UPDATE OF q SKIP LOCKED) "
      NPC_CLAIM_SET
      "WHERE q.id = ANY (ARRAY(SELECT id FROM c)) "
      NPC_CLAIM_RETURNING,
      {INT4OID, INT4OID, INT4OID, INT8ARRAYOID});
  read_claimed(plan.execute({Int32GetDatum(limit), Int32GetDatum(lease_s), Int32GetDatum(guc_priority_aging_ms),
                             int8_array(exclude)}),
               out);
}

void read_claimed(uint64_t n, ClaimResult& out) {
  for (uint64_t i = 0; i < n; i++) {
    ClaimedDecision d;
    d.id = spi_int(i, 1).value_or(0);
    d.attempts = static_cast<int>(spi_int(i, 2).value_or(1));
    d.priority = static_cast<int>(spi_int(i, 3).value_or(5));
    d.prompt = spi_text(i, 4).value_or("");
    d.params = spi_text(i, 5).value_or("{}");
    d.deadline_in_ms = spi_int(i, 6);
    if (auto g = spi_int(i, 7)) d.last_gpu_id = static_cast<int>(*g);
    d.npc_id = spi_int(i, 8).value_or(0);
    d.decision_type = spi_text(i, 9).value_or("");
    out.running.push_back(std::move(d));
  }
}

// Column arrays for the result write. A text value must be valid in the
// database's encoding: the dispatcher's texts are UTF-8 (answers parsed by a
// JSON parser, errors sanitized), and anything else is made ASCII here
// rather than stored as bytes the database cannot read.
struct TextColumn {
  std::vector<Datum> values;
  std::vector<bool> nulls;
  void add(const std::string* s) {
    if (s == nullptr) {
      values.push_back(Datum(0));
      nulls.push_back(true);
      return;
    }
    const bool valid = pg_call([&] { return pg_verifymbstr(s->data(), static_cast<int>(s->size()), true); });
    std::string ascii;  // outside pg_call: no C++ object in a frame a longjmp could skip
    if (!valid) {
      ascii = *s;
      for (char& c : ascii) {
        if (c == '\0' || static_cast<unsigned char>(c) >= 0x80) c = '?';
      }
    }
    const std::string& text = valid ? *s : ascii;
    values.push_back(pg_call([&] {
      return PointerGetDatum(cstring_to_text_with_len(text.data(), static_cast<int>(text.size())));
    }));
    nulls.push_back(false);
  }
};


// In the caller's transaction; appends the ids that reached a final status.
void write_in_transaction(const std::vector<DecisionResult>& results, std::vector<int64_t>& finished) {
  // A claimed decision is written only by the attempt that claimed it
  // (status running, same attempt number); an unclaimed handed-off one
  // (from_queued) only while it is still queued and was never attempted (a
  // row the table path has sent meanwhile is its to answer), and the write
  // counts its attempt. A batch comes as one array per column (no JSON to build and
  // parse on the answer's critical path); one row, the common case below
  // saturation, as scalars in a VALUES row: no arrays to build and no
  // function scans to materialize, 114 -> 81 µs per answer at 500 NPCs.
#define NPC_WRITE_SET                                                                          \
  "UPDATE npc_scale.decision_queue q SET"                                                      \
  "  status = r.status, response = r.response, cache_layer = r.cache_layer,"                    \
  "  finish_reason = r.finish_reason,"                                                         \
  "  error = CASE WHEN r.status = 'queued'"  /* a retry keeps the last real error */          \
  "               THEN coalesce(CASE WHEN r.release THEN q.error END, r.error, q.error)"      \
  "               ELSE r.error END,"                                                           \
  "  gpu_id = coalesce(r.gpu_id, q.gpu_id), leased_until = NULL,"                              \
  "  attempts = CASE WHEN r.from_queued THEN q.attempts + 1"                                   \
  "                  WHEN r.release THEN greatest(q.attempts - 1, 0) ELSE q.attempts END,"     \
  "  started_at = coalesce(q.started_at, now() - make_interval(secs => r.elapsed_ms / 1000.0)),"\
  "  not_before = CASE WHEN r.status = 'queued'"                                               \
  "                    THEN now() + make_interval(secs => r.retry_ms / 1000.0) END,"           \
  "  finished_at = CASE WHEN r.status = 'queued' THEN NULL ELSE now() END "
#define NPC_WRITE_FENCE                                                                        \
  " AND q.id = r.id"                                                                           \
  "  AND CASE WHEN r.from_queued THEN (q.status = 'queued' AND q.attempts = 0) IS TRUE"       \
  "           ELSE (q.status = 'running') IS TRUE AND q.attempts = r.attempts END "            \
  "RETURNING q.id, q.status <> 'queued'"
#define NPC_WRITE_COLUMNS                                                                      \
  "r(id, attempts, status, response, error, gpu_id, retry_ms, cache_layer, from_queued, elapsed_ms, release," \
  "  finish_reason)"
  static SavedPlan batch_plan(
      NPC_WRITE_SET
      "FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[],"
      "            $7::bigint[], $8::text[], $9::bool[], $10::bigint[], $11::bool[], $12::text[]) AS " NPC_WRITE_COLUMNS
      " WHERE q.id = ANY ($1)" NPC_WRITE_FENCE,
      {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
       INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID, INT8ARRAYOID, BOOLARRAYOID, TEXTARRAYOID});
  static SavedPlan one_plan(
      NPC_WRITE_SET
      "FROM (VALUES ($1::bigint, $2::int, $3::text, $4::text, $5::text, $6::int,"
      "              $7::bigint, $8::text, $9::bool, $10::bigint, $11::bool, $12::text)) AS " NPC_WRITE_COLUMNS
      " WHERE q.id = $1" NPC_WRITE_FENCE,
      {INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT8OID, TEXTOID, BOOLOID, INT8OID, BOOLOID,
       TEXTOID});
#undef NPC_WRITE_SET
#undef NPC_WRITE_FENCE
#undef NPC_WRITE_COLUMNS
  if (results.empty()) return;
  const size_t n = results.size();
  std::vector<Datum> ids, attempts, gpu_ids, retry_ms, from_queued, elapsed_ms, release;
  std::vector<bool> no_nulls(n, false), gpu_nulls;
  TextColumn status, response, error, cache_layer, finish_reason;
  for (const DecisionResult& r : results) {
    ids.push_back(Int64GetDatum(r.id));
    attempts.push_back(Int32GetDatum(r.attempts));
    status.add(&r.status);
    response.add(r.status == "done" ? &r.response : nullptr);
    error.add(r.error.empty() ? nullptr : &r.error);
    gpu_ids.push_back(Int32GetDatum(r.gpu_id.value_or(0)));
    gpu_nulls.push_back(!r.gpu_id.has_value());
    retry_ms.push_back(Int64GetDatum(r.retry_ms));
    cache_layer.add(r.cache_layer.empty() ? nullptr : &r.cache_layer);
    finish_reason.add(r.status == "done" && !r.finish_reason.empty() ? &r.finish_reason : nullptr);
    from_queued.push_back(BoolGetDatum(r.from_queued));
    elapsed_ms.push_back(Int64GetDatum(r.elapsed_ms));
    release.push_back(BoolGetDatum(r.release));
  }
  uint64_t rows = 0;
  if (n == 1) {
    // Null flags for SPI: response, error, gpu_id, cache_layer and finish_reason may be null.
    char nulls[13] = "            ";
    if (response.nulls[0]) nulls[3] = 'n';
    if (error.nulls[0]) nulls[4] = 'n';
    if (gpu_nulls[0]) nulls[5] = 'n';
    if (cache_layer.nulls[0]) nulls[7] = 'n';
    if (finish_reason.nulls[0]) nulls[11] = 'n';
    rows = one_plan.execute({ids[0], attempts[0], status.values[0], response.values[0],
                             error.values[0], gpu_ids[0], retry_ms[0], cache_layer.values[0],
                             from_queued[0], elapsed_ms[0], release[0], finish_reason.values[0]},
                            nulls);
  } else {
    rows = batch_plan.execute({
        array_of(INT8OID, ids, no_nulls),
        array_of(INT4OID, attempts, no_nulls),
        array_of(TEXTOID, status.values, status.nulls),
        array_of(TEXTOID, response.values, response.nulls),
        array_of(TEXTOID, error.values, error.nulls),
        array_of(INT4OID, gpu_ids, gpu_nulls),
        array_of(INT8OID, retry_ms, no_nulls),
        array_of(TEXTOID, cache_layer.values, cache_layer.nulls),
        array_of(BOOLOID, from_queued, no_nulls),
        array_of(INT8OID, elapsed_ms, no_nulls),
        array_of(BOOLOID, release, no_nulls),
        array_of(TEXTOID, finish_reason.values, finish_reason.nulls),
    });
  }
  for (uint64_t i = 0; i < rows; i++) {
    if (spi_bool(i, 2)) finished.push_back(spi_int(i, 1).value_or(0));
  }
  for (int64_t id : finished) notify_finished(id);
}

}  // namespace

std::vector<EndpointConfig> load_endpoints() {
  static SavedPlan plan(
      "SELECT gpu_id, endpoint, model, api, max_concurrent, enabled, coalesce(api_key, ''),"
      " weight, send_priority FROM npc_scale.gpu_endpoints ORDER BY gpu_id",
      {});
  std::vector<EndpointConfig> out;
  in_transaction("npc_scale: load endpoints", [&] {
    uint64_t n = plan.execute({}, nullptr, true);
    for (uint64_t i = 0; i < n; i++) {
      EndpointConfig e;
      e.gpu_id = static_cast<int>(spi_int(i, 1).value_or(0));
      e.base_url = spi_text(i, 2).value_or("");
      e.model = spi_text(i, 3).value_or("");
      e.api = spi_text(i, 4).value_or("completions");
      e.max_concurrent = static_cast<int>(spi_int(i, 5).value_or(1));
      e.enabled = spi_bool(i, 6);
      e.api_key = spi_text(i, 7).value_or("");
      e.weight = spi_float(i, 8).value_or(1.0);
      e.send_priority = spi_bool(i, 9);
      out.push_back(std::move(e));
    }
  });
  return out;
}

namespace {
// One queued row's claim: what it returns, as read_claimed() reads it.
uint64_t claim_one(int64_t id, int lease_s) {
  static SavedPlan plan(NPC_CLAIM_SET "WHERE q.id = $1 AND (q.status = 'queued') IS TRUE " NPC_CLAIM_RETURNING,
                        {INT8OID, INT4OID});
  return plan.execute({Int64GetDatum(id), Int32GetDatum(lease_s)});
}

// The same, for find_refusing (its transaction is rolled back).
void claim_probe(int64_t id, int lease_s) { (void)claim_one(id, lease_s); }

std::vector<int64_t> ids_of_refused(const std::vector<RefusedRow>& rows) {
  std::vector<int64_t> ids;
  for (const RefusedRow& r : rows) ids.push_back(r.id);
  return ids;
}

std::vector<int64_t> without(const std::vector<int64_t>& ids, const std::vector<int64_t>& drop) {
  if (drop.empty()) return ids;
  const std::unordered_set<int64_t> gone(drop.begin(), drop.end());
  std::vector<int64_t> out;
  for (int64_t id : ids) {
    if (!gone.count(id)) out.push_back(id);
  }
  return out;
}
}  // namespace

std::unordered_map<int64_t, int> claim_by_ids(const std::vector<int64_t>& ids, int lease_s) {
  static SavedPlan plan(
      NPC_CLAIM_SET
      "WHERE q.id = ANY($1) AND (q.status = 'queued') IS TRUE "
      "RETURNING q.id, q.attempts",
      {INT8ARRAYOID, INT4OID});
  static SavedPlan skip_locked_plan(
      NPC_CLAIM_SET
      "WHERE q.id = ANY (ARRAY(SELECT l.id FROM npc_scale.decision_queue l"
      "                         WHERE l.id = ANY($1) AND (l.status = 'queued') IS TRUE"
      "                         FOR NO KEY UPDATE SKIP LOCKED)) "
      "RETURNING q.id, q.attempts",
      {INT8ARRAYOID, INT4OID});
  std::unordered_map<int64_t, int> out;
  if (ids.empty()) return out;
  auto claim = [&](SavedPlan& p, const std::vector<int64_t>& todo) {
    std::unordered_map<int64_t, int> claimed;
    in_transaction("npc_scale: claim handed-off decisions", [&] {
      if (!extension_present()) return;
      commit_claim_asynchronously();
      bound_lock_wait();
      uint64_t n = p.execute({int8_array(todo), Int32GetDatum(lease_s)});
      for (uint64_t i = 0; i < n; i++) {
        claimed.emplace(spi_int(i, 1).value_or(0), static_cast<int>(spi_int(i, 2).value_or(1)));
      }
    });
    // Only once committed (a game's deferred constraint can refuse the COMMIT).
    out.insert(claimed.begin(), claimed.end());
  };
  // A row that refuses the claim is left unclaimed: its request is cancelled
  // and the table path's claim fails it, saying why.
  std::vector<RefusedRow> refused;
  try {
    isolating_refusals(
        {},
        [&](const std::vector<int64_t>& ex) {
          const std::vector<int64_t> todo = without(ids, ex);
          out.clear();
          try {
            claim(plan, todo);
          } catch (const PgError& e) {
            if (!is_lock_timeout(e)) throw;
            // A locked row is left out: not claimed, so the table path sends it
            // once its locker is done (if it is still queued then).
            out.clear();
            claim(skip_locked_plan, todo);
          }
        },
        [&](const std::vector<int64_t>& ex) { return without(ids, ex); },
        [&](int64_t id) { claim_probe(id, lease_s); }, &refused);
  } catch (const PgError& e) {
    if (!is_conflict(e)) throw;
    // Rows that conflict together (see claim_one_by_one): each alone; one
    // left unclaimed goes back to the table path, as a refusing one does.
    out.clear();
    for (int64_t id : without(ids, ids_of_refused(refused))) {
      try {
        claim(plan, {id});
      } catch (const PgError& one) {
        if (is_conflict(one) || is_lock_timeout(one) || is_row_error(one)) continue;
        if (out.empty()) throw;
        return out;  // those claimed are committed: kept (see claim_one_by_one)
      }
    }
  }
  return out;
}

namespace {
// A unique or exclusion constraint of the game's on the queue ("one running
// decision per NPC") that rows of one batch break together: no batch with
// both can commit, however often it is tried. Each row is claimed in a
// transaction of its own, in the claim's order, until `limit` are; one that
// conflicts with a running row (or is locked) stays queued for a later round,
// one that refuses its claim is refused as in the batch.
void claim_one_by_one(int limit, int lease_s, const std::vector<int64_t>& exclude, ClaimResult& out) {
  static SavedPlan order_plan(
      "WITH cand AS (" NPC_CLAIM_CANDIDATES("$1", "$3") ") "
      "SELECT q.id FROM npc_scale.decision_queue q WHERE q.id = ANY (ARRAY(SELECT id FROM cand))"
      " ORDER BY " NPC_CLAIM_ORDER("$2"),
      {INT4OID, INT4OID, INT8ARRAYOID});
  std::vector<int64_t> ids;
  in_transaction("npc_scale: claim candidates in order", [&] {
    if (!extension_present()) return;
    ids = ids_of(order_plan.execute({Int32GetDatum(limit), Int32GetDatum(guc_priority_aging_ms), int8_array(exclude)},
                                    nullptr, true),
                 1);
  });
  for (int64_t id : ids) {
    if (out.running.size() >= static_cast<size_t>(limit)) break;
    try {
      ClaimResult one;
      in_transaction("npc_scale: claim one decision", [&] {
        if (!extension_present()) return;
        commit_claim_asynchronously();
        bound_lock_wait();
        read_claimed(claim_one(id, lease_s), one);
      });
      // Only once committed (a game's deferred constraint can refuse the COMMIT).
      for (ClaimedDecision& d : one.running) out.running.push_back(std::move(d));
    } catch (const PgError& e) {
      if (is_conflict(e) || is_lock_timeout(e)) continue;
      if (is_row_error(e)) {
        out.refused.push_back({id, e.what()});
        continue;
      }
      // Rows claimed so far are committed: returned, to be sent (thrown
      // away, they would sit running and unsent until their leases lapse).
      // The error comes back with the next claim.
      if (!out.running.empty()) return;
      throw;
    }
  }
}
}  // namespace

ClaimResult claim_decisions(int limit, int lease_s, const std::vector<int64_t>& exclude) {
  // The rows the claim would look at, and one row's claim (rolled back).
  static SavedPlan candidates_plan(NPC_CLAIM_CANDIDATES("$1", "$2"), {INT4OID, INT8ARRAYOID});
  ClaimResult out;
  try {
    isolating_refusals(
        exclude,
        [&](const std::vector<int64_t>& ex) {
          out.running.clear();
          in_transaction("npc_scale: claim decisions", [&] {
            if (!extension_present()) return;
            commit_claim_asynchronously();
            claim_in_transaction(limit, lease_s, ex, out);
          });
        },
        [&](const std::vector<int64_t>& ex) {
          std::vector<int64_t> ids;
          in_transaction("npc_scale: claim candidates", [&] {
            ids = ids_of(candidates_plan.execute({Int32GetDatum(limit), int8_array(ex)}, nullptr, true), 1);
          });
          return ids;
        },
        [&](int64_t id) { claim_probe(id, lease_s); }, &out.refused);
  } catch (const PgError& e) {
    if (!is_conflict(e)) throw;
    std::vector<int64_t> ex = exclude;
    for (int64_t id : ids_of_refused(out.refused)) ex.push_back(id);
    out.running.clear();
    claim_one_by_one(limit, lease_s, ex, out);
  }
  return out;
}

namespace {
// The batch in one transaction (or, past a lock wait, without the locked rows).
WriteOutcome write_batch_once(const std::vector<DecisionResult>& results, bool skip_locked) {
  WriteOutcome out;
  // Durable before the NOTIFY goes out: an answer the game has seen must
  // survive a crash, or it could be answered again.
  if (!skip_locked) {
    try {
      in_transaction("npc_scale: write results", [&] {
        if (!extension_present()) return;
        bound_lock_wait();
        write_in_transaction(results, out.finished);
      });
      return out;
    } catch (const PgError& e) {
      if (!is_lock_timeout(e)) throw;
      out.finished.clear();
    }
  }
  // Lock the rows first, skipping those another session holds: their
  // results are deferred. A row that is gone (purged, or never committed)
  // is neither: its result is dropped, as a fenced-out write would be.
  static SavedPlan lock_plan(
      "SELECT id FROM npc_scale.decision_queue WHERE id = ANY ($1) FOR NO KEY UPDATE SKIP LOCKED", {INT8ARRAYOID});
  static SavedPlan exists_plan("SELECT id FROM npc_scale.decision_queue WHERE id = ANY ($1)", {INT8ARRAYOID});
  in_transaction("npc_scale: write results, skipping locked rows", [&] {
    if (!extension_present()) return;
    std::vector<int64_t> ids;
    for (const DecisionResult& r : results) ids.push_back(r.id);
    const Datum id_array = int8_array(ids);
    const std::vector<int64_t> locked_list = ids_of(lock_plan.execute({id_array}), 1);
    const std::vector<int64_t> existing_list = ids_of(exists_plan.execute({id_array}, nullptr, true), 1);
    const std::unordered_set<int64_t> locked(locked_list.begin(), locked_list.end());
    const std::unordered_set<int64_t> existing(existing_list.begin(), existing_list.end());
    std::vector<DecisionResult> writable;
    for (const DecisionResult& r : results) {
      if (locked.count(r.id)) writable.push_back(r);
      else if (existing.count(r.id)) out.deferred.push_back(r);
    }
    write_in_transaction(writable, out.finished);
  });
  return out;
}

// One transaction per row, after a batch failed on an error of its rows'.
WriteOutcome write_each(const std::vector<DecisionResult>& results, bool skip_locked) {
  WriteOutcome out;
  for (size_t i = 0; i < results.size(); i++) {
    const DecisionResult& r = results[i];
    WriteOutcome one;
    try {
      one = write_batch_once({r}, skip_locked);
    } catch (const PgError& e) {
      if (!is_row_error(e) && !is_conflict(e)) {
        // Rows written so far are committed (their waiters must be woken):
        // returned, with the rest to be written again later.
        if (out.finished.empty()) throw;
        out.unwritten.assign(results.begin() + static_cast<std::ptrdiff_t>(i), results.end());
        out.error = e.what();
        return out;
      }
      out.refused.push_back({r.id, e.what()});
      continue;
    }
    out.finished.insert(out.finished.end(), one.finished.begin(), one.finished.end());
    out.deferred.insert(out.deferred.end(), one.deferred.begin(), one.deferred.end());
  }
  return out;
}
}  // namespace

WriteOutcome write_results(const std::vector<DecisionResult>& results, bool skip_locked) {
  WriteOutcome out;
  if (results.empty()) return out;
  // A unique or exclusion violation (a game trigger's own write, say) may be
  // between answers of this batch: written alone, each may go through. One
  // that conflicts alone is refused like a row error, not retried for ever.
  try {
    return write_batch_once(results, skip_locked);
  } catch (const PgError& e) {
    if (!is_row_error(e) && !is_conflict(e)) throw;
    if (results.size() == 1) {
      out.refused.push_back({results[0].id, e.what()});
      return out;
    }
  }
  return write_each(results, skip_locked);
}

// The statements themselves, over many rows (defined below).
std::vector<int64_t> recover_leases_once(bool all_running, int max_attempts, int* requeued,
                                         const std::vector<int64_t>& exclude);
std::vector<int64_t> expire_queued_once(const std::vector<int64_t>& exclude);

std::vector<int64_t> recover_leases(bool all_running, int max_attempts, int* requeued,
                                    const std::vector<int64_t>& exclude, std::vector<RefusedRow>* refused) {
  static SavedPlan candidates_plan(
      "SELECT id FROM npc_scale.decision_queue"
      " WHERE status = 'running' AND ($1 OR leased_until < now()) AND id <> ALL ($2)",
      {BOOLOID, INT8ARRAYOID});
  static SavedPlan probe_plan(
      "UPDATE npc_scale.decision_queue SET"
      "  status = CASE WHEN attempts >= $2 THEN 'failed' ELSE 'queued' END,"
      "  finished_at = CASE WHEN attempts >= $2 THEN now() END, leased_until = NULL,"
      "  error = 'lease expired: the dispatcher stopped during attempt ' || attempts "
      "WHERE id = $1 AND (status = 'running') IS TRUE",
      {INT8OID, INT4OID});
  std::vector<int64_t> failed;
  isolating_refusals(
      exclude,
      [&](const std::vector<int64_t>& ex) { failed = recover_leases_once(all_running, max_attempts, requeued, ex); },
      [&](const std::vector<int64_t>& ex) {
        std::vector<int64_t> ids;
        in_transaction("npc_scale: recovery candidates", [&] {
          ids = ids_of(candidates_plan.execute({BoolGetDatum(all_running), int8_array(ex)}, nullptr, true), 1);
        });
        return ids;
      },
      [&](int64_t id) { probe_plan.execute({Int64GetDatum(id), Int32GetDatum(max_attempts)}); }, refused);
  return failed;
}

std::vector<int64_t> recover_leases_once(bool all_running, int max_attempts, int* requeued,
                                         const std::vector<int64_t>& exclude) {
  static SavedPlan plan(
      "UPDATE npc_scale.decision_queue SET"
      "  status = CASE WHEN attempts >= $2 THEN 'failed' ELSE 'queued' END,"
      "  finished_at = CASE WHEN attempts >= $2 THEN now() END,"
      "  leased_until = NULL,"
      "  error = 'lease expired: the dispatcher stopped during attempt ' || attempts "
      "WHERE id = ANY (ARRAY(SELECT id FROM npc_scale.decision_queue"
      "                       WHERE status = 'running' AND ($1 OR leased_until < now())"
      "                         AND id <> ALL ($3)"
      "                       FOR NO KEY UPDATE SKIP LOCKED)) "
      "RETURNING id, status = 'failed'",
      {BOOLOID, INT4OID, INT8ARRAYOID});
  std::vector<int64_t> failed;
  *requeued = 0;
  in_transaction("npc_scale: recover leases", [&] {
    if (!extension_present()) return;
    uint64_t n = plan.execute({BoolGetDatum(all_running), Int32GetDatum(max_attempts), int8_array(exclude)});
    for (uint64_t i = 0; i < n; i++) {
      if (spi_bool(i, 2)) failed.push_back(spi_int(i, 1).value_or(0));
      else (*requeued)++;
    }
    for (int64_t id : failed) notify_finished(id);
  });
  return failed;
}

std::vector<int64_t> expire_queued(const std::vector<int64_t>& exclude, std::vector<RefusedRow>* refused) {
  static SavedPlan candidates_plan(
      "SELECT id FROM npc_scale.decision_queue WHERE status = 'queued' AND deadline < now() AND id <> ALL ($1)",
      {INT8ARRAYOID});
  static SavedPlan probe_plan(
      "UPDATE npc_scale.decision_queue SET status = 'expired', finished_at = now(),"
      "  error = CASE WHEN attempts = 0 THEN 'deadline passed before it was sent'"
      "          ELSE 'deadline passed after ' || attempts || ' attempt(s); last error: '"
      "               || coalesce(error, 'none') END "
      "WHERE id = $1 AND (status = 'queued') IS TRUE",
      {INT8OID});
  std::vector<int64_t> expired;
  isolating_refusals(
      exclude, [&](const std::vector<int64_t>& ex) { expired = expire_queued_once(ex); },
      [&](const std::vector<int64_t>& ex) {
        std::vector<int64_t> ids;
        in_transaction("npc_scale: expiry candidates", [&] {
          ids = ids_of(candidates_plan.execute({int8_array(ex)}, nullptr, true), 1);
        });
        return ids;
      },
      [&](int64_t id) { probe_plan.execute({Int64GetDatum(id)}); }, refused);
  return expired;
}

std::vector<int64_t> fail_refused(const std::vector<RefusedRow>& rows, std::vector<RefusedRow>& still_refused,
                                  std::vector<RefusedRow>& locked) {
  static SavedPlan plan(
      "UPDATE npc_scale.decision_queue SET status = 'failed', finished_at = now(), leased_until = NULL,"
      "  error = $2 WHERE id = $1 AND status IN ('queued', 'running') RETURNING id",
      {INT8OID, TEXTOID});
  std::vector<int64_t> failed;
  for (const RefusedRow& r : rows) {
    try {
      in_transaction("npc_scale: fail a refusing decision", [&] {
        if (!extension_present()) return;
        bound_lock_wait();
        if (plan.execute({Int64GetDatum(r.id), text_datum(r.error)}) == 1) {
          notify_finished(r.id);
          failed.push_back(r.id);
        }
      });
    } catch (const PgError& e) {
      if (is_lock_timeout(e)) {
        locked.push_back(r);  // its locker goes first
        continue;
      }
      if (!is_row_error(e) && !is_conflict(e)) throw;
      still_refused.push_back({r.id, e.what()});
    }
  }
  return failed;
}

std::vector<int64_t> expire_queued_once(const std::vector<int64_t>& exclude) {
  static SavedPlan plan(
      "UPDATE npc_scale.decision_queue SET status = 'expired', finished_at = now(),"
      "  error = CASE WHEN attempts = 0 THEN 'deadline passed before it was sent'"
      "          ELSE 'deadline passed after ' || attempts || ' attempt(s); last error: '"
      "               || coalesce(error, 'none') END "
      "WHERE id = ANY (ARRAY(SELECT id FROM npc_scale.decision_queue"
      "                       WHERE status = 'queued' AND deadline < now() AND id <> ALL ($1)"
      "                       FOR NO KEY UPDATE SKIP LOCKED)) "
      "RETURNING id",
      {INT8ARRAYOID});
  std::vector<int64_t> expired;
  in_transaction("npc_scale: expire deadlines", [&] {
    if (!extension_present()) return;
    uint64_t n = plan.execute({int8_array(exclude)});
    expired = ids_of(n, 1);
    for (int64_t id : expired) notify_finished(id);
  });
  return expired;
}

namespace {
// Those of `ids` that `plan` (a read of ids WHERE id = ANY ($1) ...) returns.
std::vector<int64_t> ids_among(const char* activity, SavedPlan& plan, const std::vector<int64_t>& ids) {
  std::vector<int64_t> out;
  if (ids.empty()) return out;
  in_transaction(activity, [&] {
    if (!extension_present()) return;
    out = ids_of(plan.execute({int8_array(ids)}, nullptr, true), 1);
  });
  return out;
}
}  // namespace

std::vector<int64_t> unfinished_among(const std::vector<int64_t>& ids) {
  static SavedPlan plan(
      "SELECT id FROM npc_scale.decision_queue WHERE id = ANY ($1) AND status IN ('queued', 'running')",
      {INT8ARRAYOID});
  return ids_among("npc_scale: look for unfinished decisions", plan, ids);
}

std::vector<int64_t> cancelled_among(const std::vector<int64_t>& ids) {
  static SavedPlan plan(
      "SELECT id FROM npc_scale.decision_queue WHERE id = ANY ($1) AND (status = 'cancelled') IS TRUE",
      {INT8ARRAYOID});
  return ids_among("npc_scale: look for cancelled decisions", plan, ids);
}

std::optional<int64_t> next_retry_in_ms() {
  static SavedPlan plan(
      "SELECT (extract(epoch FROM min(not_before) - now()) * 1000)::bigint "
      "FROM npc_scale.decision_queue WHERE status = 'queued' AND not_before IS NOT NULL",
      {});
  std::optional<int64_t> out;
  in_transaction("npc_scale: next retry", [&] {
    if (!extension_present()) return;
    if (plan.execute({}, nullptr, true) == 1) out = spi_int(0, 1);
  });
  return out;
}

}  // namespace npc_scale
