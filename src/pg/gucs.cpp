#include "gucs.hpp"

#include <climits>
#include <optional>

#include "guard.hpp"

extern "C" {
#include "postgres.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/guc.h"
}

namespace npc_scale {

char* guc_database = nullptr;
int guc_max_prompt_bytes = 32768;
int guc_max_response_bytes = 32768;
int guc_sync_slots = 64;
int guc_request_timeout_ms = 30000;
int guc_max_attempts = 3;
int guc_lease_timeout_s = 120;
int guc_retry_base_ms = 200;
int guc_retry_max_ms = 10000;
int guc_result_ttl_s = 3600;
int guc_claim_batch = 256;
double guc_weight_load = 0.5, guc_weight_latency = 0.3, guc_weight_errors = 0.2;
double guc_latency_alpha = 0.2;
bool guc_affinity = true;
double guc_affinity_epsilon = 0.25;
double guc_urgent_reserve = 0.2;
int guc_reserve_wait_ms = 50;
char* guc_prefix_affinity_types = nullptr;
int guc_priority_aging_ms = 10000;
int guc_metrics_interval_ms = 1000;
int guc_cache_memory_kb = 65536;
int guc_cache_default_ttl_s = 3600;
char* guc_redis_host = nullptr;
int guc_redis_port = 6379;
int guc_redis_db = 0;
char* guc_redis_password = nullptr;
char* guc_redis_prefix = nullptr;
int guc_redis_connect_timeout_ms = 100;
int guc_redis_command_timeout_ms = 20;
int guc_partition_interval_s = 3600;
int guc_maintenance_lock_timeout_ms = 1000;
int guc_refresh_timeout_s = 3600;
int guc_partition_timeout_s = 3600;
int guc_maintenance_run_ttl_s = 7 * 86400;
int guc_breaker_failures = 3;
double guc_breaker_error_rate = 0.5;
int guc_breaker_window = 20;
int guc_breaker_min_requests = 10;
int guc_breaker_cooldown_ms = 5000;
int guc_await_recheck_ms = 1000;

namespace {

// Check hooks: called by Postgres, so plain C with nothing that throws. An
// empty text is refused with Postgres's own message, which names the
// parameter and the value.
bool refuse_empty(const char* value, const char* detail) {
  if (value != nullptr && value[0] != '\0') return true;
  GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
  GUC_check_errdetail("%s", detail);
  return false;
}

bool check_database(char** newval, void**, GucSource) {
  return refuse_empty(*newval, "The npc_scale background workers connect to this database.");
}

bool check_redis_host(char** newval, void**, GucSource) {
  return refuse_empty(*newval, "npc_scale.redis_port = 0 turns the Redis L2 cache off.");
}

// cache_clear() and the sweeps after a Redis restart delete the keys that
// match the prefix: an empty one would be every key of the Redis database,
// other applications' too.
bool check_redis_prefix(char** newval, void**, GucSource) {
  return refuse_empty(*newval, "The L2 cache deletes every key under its prefix when it is cleared.");
}

}  // namespace

void define_gucs() {
  // SIGHUP, not postmaster: a worker that sees the value change exits and is
  // restarted by the postmaster already connected to the new database.
  DefineCustomStringVariable("npc_scale.database",
                             "Database the npc_scale background workers connect to.", nullptr,
                             &guc_database, "postgres", PGC_SIGHUP, 0, check_database, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.max_prompt_bytes", "Largest prompt accepted, in bytes.",
                          "Also sizes the shared-memory slots of generate().",
                          &guc_max_prompt_bytes, 32768, 256, 1024 * 1024, PGC_POSTMASTER,
                          0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.max_response_bytes",
                          "Largest generate() answer kept, in bytes (longer is an error).", nullptr,
                          &guc_max_response_bytes, 32768, 256, 1024 * 1024, PGC_POSTMASTER,
                          0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.sync_slots", "Concurrent generate() calls served at once.",
                          "More callers wait for a free slot.", &guc_sync_slots, 64, 1, 1024,
                          PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.request_timeout", "Timeout of one request to a GPU endpoint.",
                          "A decision's params.timeout_ms overrides it.", &guc_request_timeout_ms,
                          30000, 10, 600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.max_attempts",
                          "Attempts per decision before it is marked failed.", nullptr,
                          &guc_max_attempts, 3, 1, 100, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.lease_timeout",
                          "How long a claimed decision stays leased to the dispatcher.",
                          "After a dispatcher crash, expired leases go back to the queue.",
                          &guc_lease_timeout_s, 120, 5, 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr,
                          nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.retry_base_delay",
                          "Back-off before the second attempt; doubles per attempt.", nullptr,
                          &guc_retry_base_ms, 200, 0, 600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr,
                          nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.retry_max_delay", "Longest back-off between attempts.",
                          nullptr, &guc_retry_max_ms, 10000, 0, 3600000, PGC_SIGHUP, GUC_UNIT_MS,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.result_ttl",
                          "Finished decisions are purged by the maintenance worker after this.",
                          nullptr, &guc_result_ttl_s, 3600, 1, 365 * 86400, PGC_SIGHUP, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.claim_batch", "Most decisions claimed per transaction.",
                          nullptr, &guc_claim_batch, 256, 1, 10000, PGC_SIGHUP, 0, nullptr, nullptr,
                          nullptr);
  // Routing: the seed's weights for priorities 3..7.
  DefineCustomRealVariable("npc_scale.weight_load", "Routing score weight of an endpoint's load.",
                           nullptr, &guc_weight_load, 0.5, 0, 100, PGC_SIGHUP, 0, nullptr, nullptr,
                           nullptr);
  DefineCustomRealVariable("npc_scale.weight_latency",
                           "Routing score weight of latency (EMA ms / 100).", nullptr,
                           &guc_weight_latency, 0.3, 0, 100, PGC_SIGHUP, 0, nullptr, nullptr,
                           nullptr);
  DefineCustomRealVariable("npc_scale.weight_errors", "Routing score weight of the error rate.",
                           nullptr, &guc_weight_errors, 0.2, 0, 100, PGC_SIGHUP, 0, nullptr,
                           nullptr, nullptr);
  DefineCustomRealVariable("npc_scale.latency_alpha", "Smoothing of the latency EMA.", nullptr,
                           &guc_latency_alpha, 0.2, 0.001, 1, PGC_SIGHUP, 0, nullptr, nullptr,
                           nullptr);
  DefineCustomBoolVariable("npc_scale.affinity",
                           "Keep an NPC on one endpoint while its load allows (prefix cache reuse).",
                           nullptr, &guc_affinity, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable("npc_scale.affinity_epsilon",
                           "Bounded-load slack: an endpoint keeps its NPCs while its load is within "
                           "(1+epsilon) of the fleet average.",
                           nullptr, &guc_affinity_epsilon, 0.25, 0, 10, PGC_SIGHUP, 0, nullptr,
                           nullptr, nullptr);
  DefineCustomRealVariable("npc_scale.urgent_reserve",
                           "Share of the fastest endpoint's slots kept for priority 0-2 while the "
                           "fleet keeps up (0 = none).",
                           nullptr, &guc_urgent_reserve, 0.2, 0, 0.9, PGC_SIGHUP, 0, nullptr, nullptr,
                           nullptr);
  DefineCustomIntVariable("npc_scale.reserve_wait",
                          "Once work has waited this long for a slot (saturation), any priority may "
                          "use the urgent reserve.",
                          nullptr, &guc_reserve_wait_ms, 50, 0, 600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr,
                          nullptr, nullptr);
  DefineCustomStringVariable("npc_scale.prefix_affinity_types",
                             "Decision types whose affinity key is the prompt prefix, not the NPC "
                             "(comma-separated).",
                             nullptr, &guc_prefix_affinity_types, "", PGC_SIGHUP, 0, nullptr,
                             nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.priority_aging",
                          "Waiting this long raises a queued decision's priority by one step "
                          "(0 = off), so priority 10 is never starved.",
                          nullptr, &guc_priority_aging_ms, 10000, 0, 86400000, PGC_SIGHUP,
                          GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.metrics_interval",
                          "How often endpoints' /metrics are scraped for their own load (0 = off).",
                          nullptr, &guc_metrics_interval_ms, 1000, 0, 3600000, PGC_SIGHUP,
                          GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.breaker_failures",
                          "Consecutive failures that open an endpoint's circuit breaker.", nullptr,
                          &guc_breaker_failures, 3, 1, 1000, PGC_SIGHUP, 0, nullptr, nullptr,
                          nullptr);
  DefineCustomRealVariable("npc_scale.breaker_error_rate",
                           "Error rate over the breaker window that opens it.", nullptr,
                           &guc_breaker_error_rate, 0.5, 0, 1, PGC_SIGHUP, 0, nullptr, nullptr,
                           nullptr);
  DefineCustomIntVariable("npc_scale.breaker_window", "Outcomes in the breaker's error-rate window.",
                          nullptr, &guc_breaker_window, 20, 1, 10000, PGC_SIGHUP, 0, nullptr,
                          nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.breaker_min_requests",
                          "Outcomes needed before the error rate can open the breaker (at most breaker_window).", nullptr,
                          &guc_breaker_min_requests, 10, 1, 10000, PGC_SIGHUP, 0, nullptr, nullptr,
                          nullptr);
  DefineCustomIntVariable("npc_scale.breaker_cooldown",
                          "An open breaker probes /health after this long.", nullptr,
                          &guc_breaker_cooldown_ms, 5000, 10, 3600000, PGC_SIGHUP, GUC_UNIT_MS,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.cache_memory",
                          "Shared memory for the L1 cache (keys, values and overhead).", nullptr,
                          &guc_cache_memory_kb, 65536, 1024, INT_MAX / 2, PGC_POSTMASTER, GUC_UNIT_KB,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.cache_default_ttl",
                          "How long deterministic answers stay cached (params.cache_ttl overrides).",
                          nullptr, &guc_cache_default_ttl_s, 3600, 1, 30 * 86400, PGC_SIGHUP,
                          GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomStringVariable("npc_scale.redis_host", "Redis host of the L2 cache.", nullptr,
                             &guc_redis_host, "127.0.0.1", PGC_SIGHUP, 0, check_redis_host, nullptr,
                             nullptr);
  DefineCustomIntVariable("npc_scale.redis_port", "Redis port of the L2 cache (0 = no L2).", nullptr,
                          &guc_redis_port, 6379, 0, 65535, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.redis_db", "Redis database number.", nullptr, &guc_redis_db, 0,
                          0, 1024, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomStringVariable("npc_scale.redis_password", "Redis password (AUTH).", nullptr,
                             &guc_redis_password, "", PGC_SIGHUP,
                             GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);
  DefineCustomStringVariable("npc_scale.redis_prefix", "Prefix of npc_scale's Redis keys.", nullptr,
                             &guc_redis_prefix, "npc_scale:cache:", PGC_SIGHUP, 0, check_redis_prefix,
                             nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.redis_connect_timeout", "Redis connect timeout.", nullptr,
                          &guc_redis_connect_timeout_ms, 100, 1, 60000, PGC_SIGHUP, GUC_UNIT_MS,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.redis_command_timeout",
                          "Redis command timeout: a slower Redis is a miss.", nullptr,
                          &guc_redis_command_timeout_ms, 20, 1, 60000, PGC_SIGHUP, GUC_UNIT_MS,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.partition_maintenance_interval",
                          "How often the maintenance worker runs partition maintenance.", nullptr,
                          &guc_partition_interval_s, 3600, 1, 7 * 86400, PGC_SIGHUP, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  // A refresh or a partition change waiting behind a long game query would
  // queue the game's own statements behind its lock: it gives up instead,
  // and is tried again soon. Short, as the game's statements wait behind it
  // for as long, each retry (a nightly pg_dump holding the parent for an
  // hour meant a 5 s freeze of the game's queries every minute).
  DefineCustomIntVariable("npc_scale.maintenance_lock_timeout",
                          "Longest wait for a lock in a refresh or in partition maintenance (0: no limit).",
                          nullptr, &guc_maintenance_lock_timeout_ms, 1000, 0, 3600000, PGC_USERSET,
                          GUC_UNIT_MS, nullptr, nullptr, nullptr);
  // One worker runs every job in turn: a view whose query never ends would
  // hold the rest (and the purges and partition maintenance) for ever.
  DefineCustomIntVariable("npc_scale.refresh_timeout",
                          "Longest run of a scheduled refresh; it fails after this (0: no limit).",
                          nullptr, &guc_refresh_timeout_s, 3600, 0, 7 * 86400, PGC_SIGHUP, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  // The same for partition maintenance: rows moving out of the default
  // partition fire the game's ENABLE ALWAYS triggers and check its
  // constraints, which may never return.
  DefineCustomIntVariable("npc_scale.partition_timeout",
                          "Longest run of one partition maintenance call by the maintenance worker (one parent, "
                          "one transaction); it fails after this and is tried again (0: no limit).",
                          nullptr, &guc_partition_timeout_s, 3600, 0, 7 * 86400, PGC_SIGHUP, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable("npc_scale.maintenance_run_ttl",
                          "Rows of npc_scale.maintenance_runs are purged after this.", nullptr,
                          &guc_maintenance_run_ttl_s, 7 * 86400, 60, 3650 * 86400, PGC_SIGHUP, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  // Every way a decision finishes sets the waiter's latch; this re-read only
  // covers what has no latch to set (a cancel in a transaction committed by
  // COMMIT PREPARED). Tests raise it to prove the latches are set.
  DefineCustomIntVariable("npc_scale.await_recheck",
                          "How often await_decision() re-reads its row without a wake-up.", nullptr,
                          &guc_await_recheck_ms, 1000, 10, 3600000, PGC_USERSET,
                          GUC_UNIT_MS | GUC_NOT_IN_SAMPLE, nullptr, nullptr, nullptr);
  MarkGUCPrefixReserved("npc_scale");
}

long attempt_limit_ms() { return std::max(1000L, (guc_lease_timeout_s - 5) * 1000L); }

// The database's name is looked up again only when the setting changes.
std::string unserved_database_name() {
  static std::optional<std::string> checked_setting;
  static std::string here;
  const std::string served = guc_database ? guc_database : "";
  if (checked_setting != served) {
    here = pg_call([] {
      const char* name = get_database_name(MyDatabaseId);
      return std::string(name ? name : "");
    });
    checked_setting = served;
  }
  return here == served ? std::string() : here;
}

void check_served_database(const std::string& consequence) {
  const std::string here = unserved_database_name();
  const std::string served = guc_database ? guc_database : "";
  if (!here.empty()) {
    throw Error("55000",
                "no npc_scale dispatcher serves database \"" + here + "\" (npc_scale.database is \"" + served +
                    "\"): " + consequence,
                {}, "Call it in database \"" + served + "\", or point npc_scale.database here.");
  }
}

}  // namespace npc_scale
