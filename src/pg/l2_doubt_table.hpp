// The shared set of keys whose L2 copy may be stale (core/l2_doubts.hpp),
// behind a spinlock: every call is a few probes with no Postgres call inside,
// so it is safe anywhere on a process's main thread, at COMMIT included.
#pragma once

#include <cstdint>
#include <string>

#include "core/l2_doubts.hpp"

extern "C" {
#include "postgres.h"
}

namespace npc_scale {

Size l2_doubt_table_size();
void l2_doubt_table_attach();  // shmem_startup_hook

// A write or delete of `key` may not have reached Redis.
void l2_doubt(const std::string& key);
// A clear did not reach Redis: every L2 hit is doubted until one does.
void l2_doubt_everything();
// none: serve an L2 hit; key: delete the key's L2 copy instead (then
// l2_trust()); all: skip L2 until a clear has emptied it.
L2Doubts::Doubt l2_doubt_of(const std::string& key);
// Redis confirmed the key's DEL: its L2 copy is gone.
void l2_trust(const std::string& key);
// Note before a clear of Redis; once Redis confirms it, trust everything
// unless a doubt came in meanwhile (false then).
uint64_t l2_doubt_stamp();
bool l2_trust_everything(uint64_t stamp);

struct L2DoubtStats {
  int64_t keys = 0;
  bool everything = false;
};
L2DoubtStats l2_doubt_stats();

}  // namespace npc_scale
