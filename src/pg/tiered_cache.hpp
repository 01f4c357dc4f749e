// The three-tier cache as one service: L1 shared memory → L2 Redis → L3
// npc_scale.cache_store. A lower hit is promoted to the layers above it (with
// its remaining TTL). Redis trouble is a miss, never an error. Used by the
// SQL cache_* functions, generate() and the dispatcher.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/l2_asks.hpp"
#include "core/redis_cache.hpp"

namespace npc_scale {

enum class CacheLayer { none, l1, l2, l3 };
const char* cache_layer_name(CacheLayer layer);  // "l1" | "l2" | "l3" | nullptr

// use_l3: the caller is inside a transaction where SPI may run (and is not
// the dispatcher holding network waits). Counts hits per layer and misses.
std::optional<std::string> cache_lookup(const std::string& key, bool use_l3, CacheLayer* layer);

// The same lookup in steps, for the dispatcher, so that a
// Redis round trip is never in front of a request nor stalls its event
// loop: an L1 read alone, counting nothing (whoever answers from it counts);
// the request is sent; then L2 is asked for the round's keys without
// waiting (a ticket), and the answers are taken once Redis's replies have
// arrived (the dispatcher watches cache_l2_wait_fd()). Taking them promotes
// each hit to L1, where the dispatcher's table path picks it up, and counts
// it as an L2 hit (true) or else a miss (false). An ask Redis does not answer
// within npc_scale.redis_command_timeout is answered as misses.
std::optional<std::string> cache_read_l1(const std::string& key);
// Counts a lookup the caller finished itself: a hit in `layer`, or a miss (none).
void cache_count(CacheLayer layer);
uint64_t cache_ask_l2(const std::vector<std::string>& keys);
// The asks answered so far: a hit is reported only when it was promoted to L1.
std::vector<L2Reply> cache_take_l2_answers();
// The descriptor to watch while asks are pending, -1 if none.
int cache_l2_wait_fd();
// Milliseconds until there is something to take (0: now) or the oldest
// pending ask times out; -1 if nothing is pending.
int64_t cache_l2_next_event_ms();

// Writes L1, and L2 without waiting for Redis's reply; with `behind` wait,
// replies are waited for when 64 are unread rather than the L2 write
// skipped. ttl_s <= 0: no expiry. False if the connection to Redis failed
// meanwhile (not for an error reply).
// replaces: the value must replace what Redis holds (a cache_set()): if
// the SET may not have landed, the key's L2 copy is doubted (l2_doubt_table)
// and not served until deleted.
bool cache_store(const std::string& key, const std::string& value, int64_t ttl_s,
                 RedisCache::WhenBehind behind = RedisCache::WhenBehind::skip,
                 bool replaces = false);
// Writes the key's L3 row (SPI).
void cache_put_l3(const std::string& key, const std::string& value, int64_t ttl_s);
// Deletes a key's L3 row (cache_set without persist: an older persisted
// value must not come back once the new one expires from L1 and L2).
bool cache_forget_l3(const std::string& key);

// cache_delete() / cache_clear(): L3, L2 (which must confirm), L1. The
// caller notes them for COMMIT (cache_xact), which repeats L2 and L1.
bool cache_remove(const std::string& key);
void cache_clear_all();
// The key (nullptr: every key) out of L2 and L1, Redis best effort (and
// not tried unless try_redis): after a COMMIT. False if Redis failed.
bool cache_drop_upper(const std::string* key, bool try_redis);

// At COMMIT, after its cache_set()s: reads Redis's replies to them (each
// waited for up to the command timeout), so that a SET refused or lost is
// doubted before the COMMIT returns. False if the connection failed.
bool cache_confirm_l2_writes();
// The maintenance worker's, each tick: when every key is doubted (too many
// doubts, or a clear that did not reach Redis), or the oldest doubt is 30 s
// old, deletes the doubted keys from Redis (every key, in the first case)
// and lifts the doubts older than the sweep. None if it did not run or
// Redis failed. With L2 off (redis_port 0) it doubts every key instead.
struct L2Sweep {
  int64_t deleted;
  bool everything;  // every key was doubted, and deleted
};
std::optional<L2Sweep> cache_settle_l2_doubts();
// The keys whose SETs this process reported lost since the last call.
std::vector<std::string> cache_take_lost_writes();

// Reads GUCs into this process's Redis client (cheap; call before use).
void refresh_redis_config();
// For the dispatcher, once at start: its Redis connects run in the background
// (a connect under way is a miss), so an unreachable Redis host never stalls
// its event loop for the connect timeout.
void cache_connect_redis_in_background();

// Cache keys of generations and of the general key/value service live apart.
inline std::string generation_key(const std::string& hex) { return "gen:" + hex; }
inline std::string user_key(const std::string& key) { return "kv:" + key; }

}  // namespace npc_scale
