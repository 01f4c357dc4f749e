// L2 of the cache: Redis through hiredis, with strict timeouts. Redis being
// down or slow is a miss for the caller, never an error: after a failure the
// connection is retried with exponential back-off, and the state change
// (down / back) is reported once through on_state_change, not per request.
// Values are stored as plain text (SET key value EX ttl).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct redisContext;

namespace npc_scale {

struct RedisConfig {
  std::string host = "127.0.0.1";
  int port = 6379;                 // 0 = L2 disabled
  int db = 0;
  std::string password;            // never logged
  std::string prefix = "npc_scale:cache:";
  int connect_timeout_ms = 100;
  int command_timeout_ms = 20;
  bool operator==(const RedisConfig& o) const {
    return host == o.host && port == o.port && db == o.db && password == o.password &&
           prefix == o.prefix && connect_timeout_ms == o.connect_timeout_ms &&
           command_timeout_ms == o.command_timeout_ms;
  }
};

class RedisCache {
 public:
  enum class Result { hit, miss, unavailable };

  RedisCache() = default;
  ~RedisCache();
  RedisCache(const RedisCache&) = delete;
  RedisCache& operator=(const RedisCache&) = delete;

  // Applies a configuration; reconnects lazily if it changed.
  void configure(const RedisConfig& config);
  bool enabled() const { return config_.port > 0; }

  // On a hit, *ttl_ms (if given) is the key's remaining time to live, -1 if
  // it has none — so a promotion to L1 never outlives the L2 entry.
  Result get(const std::string& key, std::string* value, int64_t now_ms, int64_t* ttl_ms = nullptr);
  // Several keys in one round trip (pipelined), in order.
  struct Lookup {
    Result result = Result::miss;
    std::string value;
    int64_t ttl_ms = -1;  // on a hit: time left, -1 = no expiry
  };
  std::vector<Lookup> get_many(const std::vector<std::string>& keys, int64_t now_ms);
  // ttl_s <= 0: no expiry.
  bool set(const std::string& key, const std::string& value, int64_t ttl_s, int64_t now_ms);
  // As set(), without waiting for Redis's reply: the command is written now
  // and its reply read before the next command that waits for one (by then
  // it has long arrived), or once 64 are unread. For the dispatcher, whose event loop should not sit
  // out a round trip per answer it caches. False if it could not be written.
  bool set_nowait(const std::string& key, const std::string& value, int64_t ttl_s, int64_t now_ms);
  // Replies of set_nowait() not read yet.
  int unread_replies() const { return unread_replies_; }
  bool del(const std::string& key, int64_t now_ms);
  // Deletes every key under the prefix (SCAN + DEL in batches). Returns keys deleted, -1 if unavailable.
  int64_t clear(int64_t now_ms);

  bool up() const { return up_; }
  uint64_t errors() const { return errors_; }
  std::function<void(bool up, const std::string& why)> on_state_change;

 private:
  bool ensure_connected(int64_t now_ms, bool read_replies = true);
  // Reads the replies set_nowait() left; false (and the connection failed) on an error.
  bool read_unread_replies(int64_t now_ms);
  void fail(const std::string& why, int64_t now_ms);
  void disconnect();

  RedisConfig config_;
  redisContext* ctx_ = nullptr;
  bool up_ = true;  // optimistic until the first failure; reported only on change
  uint64_t errors_ = 0;
  int64_t next_attempt_ms_ = 0;
  int64_t backoff_ms_ = 0;
  int unread_replies_ = 0;
};

}  // namespace npc_scale
