// Configuration (GUCs) of npc_scale. Defined in gucs.cpp, registered by
// define_gucs() from _PG_init.
#pragma once

#include <string>

namespace npc_scale {

// The workers serve one database (npc_scale.database): a request made in
// another would wait for ever. Raises 55000 there, saying so (`consequence`).
void check_served_database(const std::string& consequence);
// The name of this database if the workers do not serve it, else empty.
std::string unserved_database_name();
// The longest a queued decision's attempt may take: its request ends inside
// its lease (npc_scale.lease_timeout less 5 s, at least 1 s).
long attempt_limit_ms();

extern char* guc_database;          // npc_scale.database: where both workers connect
extern int guc_max_prompt_bytes;    // postmaster: sizes the generate() slots too
extern int guc_max_response_bytes;  // postmaster
extern int guc_sync_slots;          // postmaster: concurrent generate() calls
extern int guc_request_timeout_ms;  // per HTTP request, unless params.timeout_ms
extern int guc_max_attempts;        // attempts per decision before it fails
extern int guc_lease_timeout_s;     // a claim lapses after this (dispatcher crash)
extern int guc_retry_base_ms;       // back-off after a transient failure …
extern int guc_retry_max_ms;        // … capped here
extern int guc_result_ttl_s;        // finished decisions are purged after this
extern int guc_claim_batch;         // most rows claimed per transaction
// routing (see src/core/router.hpp)
extern double guc_weight_load, guc_weight_latency, guc_weight_errors;
extern double guc_latency_alpha;
extern bool guc_affinity;
extern double guc_affinity_epsilon;
extern double guc_urgent_reserve;   // share of the fastest endpoint's slots kept for priority 0-2
extern int guc_reserve_wait_ms;     // … until work has waited this long for a slot
extern char* guc_prefix_affinity_types;  // decision types keyed by prompt prefix, not NPC
extern int guc_priority_aging_ms;
extern int guc_metrics_interval_ms;      // scrape of vLLM /metrics; 0 = off
// cache (L1 shared memory, L2 Redis, L3 table)
extern int guc_cache_memory_kb;      // postmaster: the L1 budget
extern int guc_cache_default_ttl_s;
extern char* guc_redis_host;
extern int guc_redis_port;           // 0 = no L2
extern int guc_redis_db;
extern char* guc_redis_password;     // superuser-only, never logged
extern char* guc_redis_prefix;
extern int guc_redis_connect_timeout_ms;
extern int guc_redis_command_timeout_ms;
extern int guc_partition_interval_s;  // how often the worker runs partition maintenance
extern int guc_maintenance_lock_timeout_ms;  // longest wait for a lock in maintenance (0: no limit)
extern int guc_refresh_timeout_s;            // longest scheduled refresh (0: no limit)
extern int guc_partition_timeout_s;          // longest partition maintenance call of the worker (0: no limit)
extern int guc_maintenance_run_ttl_s;        // maintenance_runs rows are purged after this
// circuit breaker
extern int guc_breaker_failures;
extern double guc_breaker_error_rate;
extern int guc_breaker_window;
extern int guc_breaker_min_requests;
extern int guc_breaker_cooldown_ms;
extern int guc_await_recheck_ms;      // developer option: await_decision()'s safety-net re-read

void define_gucs();

}  // namespace npc_scale
