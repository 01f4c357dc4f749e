// Module entry: _PG_init defines the GUCs, asks for shared memory and
// registers the two background workers. Only valid from
// shared_preload_libraries, because workers and shared memory can only be set
// up while the postmaster starts.
#include "gucs.hpp"
#include "handoff.hpp"
#include "l1_cache.hpp"
#include "l2_doubt_table.hpp"
#include "shared_state.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

PG_MODULE_MAGIC;

void _PG_init(void);
}

namespace {

shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

void npc_shmem_request() {
  if (prev_shmem_request_hook) prev_shmem_request_hook();
  RequestAddinShmemSpace(npc_scale::shared_state_size());
  RequestAddinShmemSpace(npc_scale::l1_cache_size());
  RequestAddinShmemSpace(npc_scale::handoff_size());
  RequestAddinShmemSpace(npc_scale::l2_doubt_table_size());
  npc_scale::l1_cache_request();
  npc_scale::l2_doubt_table_request();
}

void npc_shmem_startup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  npc_scale::shared_state_attach();
  npc_scale::l1_cache_attach();
  npc_scale::handoff_attach();
  npc_scale::l2_doubt_table_attach();
}

void register_worker(npc_scale::WorkerKind kind, const char* entry) {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof(worker));
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  // A crash (or pg_terminate_backend) restarts the worker after this long.
  worker.bgw_restart_time = npc_scale::kWorkerRestartSeconds;
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "npc_scale");
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", entry);
  snprintf(worker.bgw_name, BGW_MAXLEN, "%s", npc_scale::worker_name(kind));
  snprintf(worker.bgw_type, BGW_MAXLEN, "%s", npc_scale::worker_name(kind));
  worker.bgw_main_arg = Int32GetDatum(static_cast<int>(kind));
  RegisterBackgroundWorker(&worker);
}

}  // namespace

void _PG_init(void) {
  if (!process_shared_preload_libraries_in_progress) {
    ereport(ERROR,
            (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
             errmsg("npc_scale must be loaded via shared_preload_libraries"),
             errhint("Add 'npc_scale' to shared_preload_libraries in postgresql.conf "
                     "(e.g. shared_preload_libraries = 'npc_scale') and restart the server.")));
  }
  npc_scale::define_gucs();

  prev_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = npc_shmem_request;
  prev_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = npc_shmem_startup;

  register_worker(npc_scale::WorkerKind::dispatcher, "npc_scale_dispatcher_main");
  register_worker(npc_scale::WorkerKind::maintenance, "npc_scale_maintenance_main");
}
