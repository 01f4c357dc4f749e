#include "gucs.hpp"

extern "C" {
#include "postgres.h"
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

void define_gucs() {
  // SIGHUP, not postmaster: a worker that sees the value change exits and is
  // restarted by the postmaster already connected to the new database.
  DefineCustomStringVariable("npc_scale.database",
                             "Database the npc_scale background workers connect to.", nullptr,
                             &guc_database, "postgres", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
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
  MarkGUCPrefixReserved("npc_scale");
}

}  // namespace npc_scale
