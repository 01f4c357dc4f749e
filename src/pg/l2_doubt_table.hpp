// The shared set of keys whose L2 copy may be stale (core/l2_doubts.hpp),
// behind one LWLock, with a flag read without it: while nothing is doubted
// (nearly always), a lookup pays one atomic read.
#pragma once

#include <cstdint>
#include <string>

#include "core/l2_doubts.hpp"

extern "C" {
#include "postgres.h"
}

namespace npc_scale {

Size l2_doubt_table_size();
void l2_doubt_table_request();  // shmem_request_hook: its lock
void l2_doubt_table_attach();   // shmem_startup_hook

// None of these raises or throws (they may run at COMMIT, or inside the
// Redis client's reply handling).
// A write or delete of `key` may not have reached Redis.
void l2_doubt(const std::string& key) noexcept;
// A clear did not reach Redis: every L2 hit is doubted until one does.
void l2_doubt_everything() noexcept;
// As l2_doubt_everything(), but nothing when every key is doubted already
// (no new stamp): for L2 off, when no sweep can be under way.
void l2_doubt_everything_once() noexcept;
// none: serve an L2 hit; key: delete the key's L2 copy instead (then
// l2_trust()); all: skip L2 until a clear has emptied it.
L2Doubts::Doubt l2_doubt_of(const std::string& key) noexcept;
// Noted before a DEL or a clear is sent to Redis.
uint64_t l2_doubt_stamp() noexcept;
// Redis confirmed the key's DEL sent at `stamp`: trusted, unless doubted
// anew since.
void l2_trust(const std::string& key, uint64_t stamp) noexcept;
// Redis confirmed a clear (or a sweep of the doubted keys) sent at `stamp`,
// at steady-clock `sent_ms`: the doubts up to then are lifted.
void l2_trust_everything(uint64_t stamp, int64_t sent_ms) noexcept;

// A connection reached the Redis server with this run_id: one other than
// the last seen (a restart, a failover) doubts every key, until the
// maintenance worker has emptied it. True if it was another than a known one.
bool l2_note_server(const std::string& run_id) noexcept;

struct L2DoubtStats {
  int64_t keys = 0;
  bool everything = false;
  int64_t since_ms = 0;  // steady clock: the oldest doubt is at most this old
};
L2DoubtStats l2_doubt_stats() noexcept;

}  // namespace npc_scale
