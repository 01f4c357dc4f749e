// The maintenance background worker: purges finished decisions (and, as the
// project grows, refreshes materialized views and manages partitions) —
// separate from the dispatcher so a long REFRESH never delays a decision.
#include "guard.hpp"
#include "gucs.hpp"
#include "spi.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void npc_scale_maintenance_main(Datum main_arg);
}

namespace npc_scale {
namespace {

constexpr long kTickMs = 1000;
constexpr int kPurgeBatch = 1000;  // rows per transaction: short locks, steady vacuum

// Deletes finished decisions older than npc_scale.result_ttl, in batches so
// no transaction holds many row locks or bloats the WAL at once.
int64_t purge_finished() {
  static SavedPlan plan(
      "DELETE FROM npc_scale.decision_queue WHERE id IN ("
      "  SELECT id FROM npc_scale.decision_queue"
      "   WHERE finished_at < now() - make_interval(secs => $1)"
      "   ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
      {INT4OID, INT4OID});
  int64_t total = 0;
  for (;;) {
    uint64_t n = 0;
    in_transaction("npc_scale: purge finished decisions", [&] {
      if (!extension_present()) return;
      n = plan.execute({Int32GetDatum(guc_result_ttl_s), Int32GetDatum(kPurgeBatch)});
    });
    total += static_cast<int64_t>(n);
    if (n < static_cast<uint64_t>(kPurgeBatch)) return total;
  }
}

// Expired rows of the L3 cache table, likewise in batches.
int64_t purge_cache_store() {
  static SavedPlan plan(
      "DELETE FROM npc_scale.cache_store WHERE key IN ("
      "  SELECT key FROM npc_scale.cache_store WHERE expires_at < now()"
      "   LIMIT $1 FOR UPDATE SKIP LOCKED)",
      {INT4OID});
  int64_t total = 0;
  for (;;) {
    uint64_t n = 0;
    in_transaction("npc_scale: purge expired cache rows", [&] {
      if (!extension_present()) return;
      n = plan.execute({Int32GetDatum(kPurgeBatch)});
    });
    total += static_cast<int64_t>(n);
    if (n < static_cast<uint64_t>(kPurgeBatch)) return total;
  }
}

void run_maintenance_worker() {
  worker_startup(WorkerKind::maintenance);
  for (;;) {
    worker_set_state(WorkerState::idle);
    worker_wait(kTickMs);
    worker_set_state(WorkerState::busy, "purging finished decisions");
    try {
      purge_finished();
      purge_cache_store();
    } catch (const std::exception& e) {
      std::string msg = e.what();
      pg_call([&] { ereport(WARNING, (errmsg("npc_scale maintenance: %s", msg.c_str()))); });
    }
  }
}

}  // namespace
}  // namespace npc_scale

void npc_scale_maintenance_main(Datum) {
  npc_scale::guarded([] { npc_scale::run_maintenance_worker(); });
}
