// L2 of the cache: Redis through hiredis, with strict timeouts. Redis being
// down or slow is a miss for the caller, never an error: after a failure the
// connection is retried with exponential back-off, and the state change
// (down / back) is reported once through on_state_change, not per request.
// Values are stored as plain text (SET key value EX ttl).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host_lookup.hpp"

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
  // An event loop's client: a connect in progress (the host name's lookup,
  // then the TCP connect) is a miss for the caller, not a wait; later calls
  // see it through.
  bool connect_in_background = false;
  bool operator==(const RedisConfig& o) const {
    return host == o.host && port == o.port && db == o.db && password == o.password &&
           prefix == o.prefix && connect_timeout_ms == o.connect_timeout_ms &&
           command_timeout_ms == o.command_timeout_ms &&
           connect_in_background == o.connect_in_background;
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
  // and its reply read later (take_answers(), or before the next command
  // that waits for one). For the dispatcher, whose event loop should not sit
  // out a round trip per answer it caches. False if it could not be written,
  // or if 64 replies (SETs and asks) are still outstanding and `behind` is
  // skip: a Redis that far behind is not waited for. With wait, the replies
  // read so far are waited for instead (the command timeout at most), for a
  // caller that must not lose the write to a burst of its own, such as a
  // transaction's sets applied at COMMIT.
  // report_loss: the value replaces an older one that must not outlive it
  // (a cache_set()): when it did not reach Redis, or may not have (an error
  // reply, or no reply read before the connection was lost), on_set_lost is
  // called with its key.
  enum class WhenBehind { skip, wait };
  bool set_nowait(const std::string& key, const std::string& value, int64_t ttl_s, int64_t now_ms,
                  WhenBehind behind = WhenBehind::skip, bool report_loss = false);
  // Replies of set_nowait() and ask() not read yet.
  int unread_replies() const { return static_cast<int>(pending_.size()); }

  // get_many() without waiting: the commands are written now and the
  // replies read by take_answers() once they have arrived, so an event loop
  // can watch fd() instead of sitting out the round trip. Returns the ask's
  // ticket (> 0). Redis off, backing off, failing or 64 replies behind: the
  // ask is answered at once, every key unavailable.
  uint64_t ask(const std::vector<std::string>& keys, int64_t now_ms);
  struct Answer {
    uint64_t ticket = 0;
    std::vector<std::string> keys;  // as asked
    std::vector<Lookup> lookups;    // one per key, in that order
  };
  // Answers complete by now, oldest first. Reads what has arrived without
  // blocking; an ask older than command_timeout_ms fails the connection and
  // is answered unavailable, with every ask behind it.
  std::vector<Answer> take_answers(int64_t now_ms);
  // Asks not answered yet.
  bool awaiting() const { return asks_pending_ > 0; }
  // Answers take_answers() would return without reading anything.
  bool has_answers() const { return !answers_.empty(); }
  // The connection's descriptor, -1 if none: readable once replies arrive.
  int fd() const;
  // Milliseconds until the oldest pending ask times out (0: now), -1 if none.
  int64_t ask_timeout_in_ms(int64_t now_ms) const;
  // Whether the key existed; nullopt if Redis could not be reached (tried
  // even while backing off, unless not even_backing_off).
  std::optional<bool> del(const std::string& key, int64_t now_ms, bool even_backing_off = true);
  // Reads every reply still outstanding (each waited for up to the command
  // timeout), so that what set_nowait() left is known landed or lost. False
  // if the connection failed meanwhile.
  bool read_outstanding(int64_t now_ms);
  // Deletes every key under the prefix (SCAN, one UNLINK per page). Returns keys deleted, -1 if unavailable.
  int64_t clear(int64_t now_ms);
  // As clear(), for the keys (without the prefix) `doomed` picks: every key
  // present from its start to its end is offered once.
  int64_t sweep(int64_t now_ms, const std::function<bool(std::string_view key)>& doomed, bool even_backing_off);

  bool up() const { return up_; }
  // A lookup or TCP connect started and not yet through (connect_in_background).
  bool connecting() const { return lookup_ != nullptr || connecting_fd_ >= 0; }
  uint64_t errors() const { return errors_; }
  // Connections given up (a subset of errors(): not error replies, which
  // leave the connection working).
  uint64_t connection_failures() const { return connection_failures_; }
  // The text of the last error reply (a command's, the connection kept).
  const std::string& last_reply_error() const { return last_reply_error_; }
  // host:port, for messages.
  std::string endpoint_text() const { return config_.host + ":" + std::to_string(config_.port); }
  std::function<void(bool up, const std::string& why)> on_state_change;
  // See set_nowait(). Not called from the destructor: SETs written before a
  // process exits are in the socket, and Redis reads them.
  std::function<void(const std::string& key)> on_set_lost;
  // Set: each new connection asks Redis which server it is (INFO server,
  // pipelined behind the login) and reports its run_id here before any
  // reply behind it is read. A Redis that restarted (and reloaded an older
  // snapshot, or lost its last writes), or another server after a failover,
  // has a new one. Not called when Redis refuses INFO (renamed, ACL).
  std::function<void(const std::string& run_id)> on_server;
  // The run_id line of an INFO reply; empty if it has none.
  static std::string run_id_of(std::string_view info);
  // Starts a host name's lookup (connect_in_background); tests put a
  // stand-in here. Unset: HostLookup.
  std::function<std::unique_ptr<HostLookup>(const std::string& host, int port)> start_lookup;

 private:
  // drain: first read every reply still outstanding (waiting for them).
  // even_backing_off: try now even inside the back-off (invalidations).
  bool ensure_connected(int64_t now_ms, bool drain = true, bool even_backing_off = false);
  // Looks the host up (connect_in_background: starts the lookup, and
  // returns false while it runs) and starts a non-blocking TCP connect to
  // its first address; false, and the connection failed, if none could even
  // start.
  bool start_connect(int64_t now_ms);
  // Starts a connect to the next resolved address (why: the last one's
  // error); false, and the connection failed, when none is left.
  bool connect_next_address(int64_t now_ms, const std::string& why);
  // Sees a started connect through, moving on to the next address when one
  // fails: waits up to the connect timeout per address, or
  // (connect_in_background) only looks; then hands the socket to hiredis.
  bool finish_connect(int64_t now_ms);
  // Consumes replies in command order: wait, every reply not read yet
  // (waiting for each up to the command timeout); else only those already
  // read off the socket. False (and the connection failed) on an error.
  bool read_replies(int64_t now_ms, bool wait);
  // Reads and consumes the replies that have arrived, without blocking.
  void read_arrived(int64_t now_ms);
  // Whether another command may be left unread (reading what has arrived if needed).
  bool room_for_another(int64_t now_ms);
  // Fails the connection when the oldest unread reply is past the command timeout.
  void fail_if_overdue(int64_t now_ms);
  // One reply for the oldest pending command (an error reply counts as an
  // error, and is a miss or an uncached value, but keeps the connection).
  void consume(void* reply);
  // Counts an error reply (a whole reply, or one key's within an ask's).
  void note_error_reply(const void* reply);
  // Writes the commands appended to the context.
  bool flush_output(int64_t now_ms);
  // Asks whose replies will not come: answered unavailable.
  void answer_pending_unavailable();
  void fail(const std::string& why, int64_t now_ms);
  // Logged in: back-off reset, "up" reported if it was down (not while the
  // lookup script is refused: then once a lookup succeeds).
  void mark_up();
  void disconnect();

  RedisConfig config_;
  redisContext* ctx_ = nullptr;
  std::unique_ptr<HostLookup> lookup_;  // the host name's, while it runs (connect_in_background)
  int64_t lookup_started_ms_ = 0;
  bool lookup_overdue_ = false;  // reported down while it still runs
  int connecting_fd_ = -1;              // our socket until its connect is through
  int64_t connect_deadline_ms_ = 0;
  std::vector<SocketAddress> addresses_;  // the host's, in the resolver's order
  size_t next_address_ = 0;
  bool up_ = true;  // optimistic until the first failure; reported only on change
  uint64_t connection_failures_ = 0;
  uint64_t errors_ = 0;
  std::string last_reply_error_;  // the last error reply's text
  int64_t next_attempt_ms_ = 0;
  int64_t backoff_ms_ = 0;
  // Commands written whose replies are not read yet, in order, one reply
  // each: a login command (AUTH, SELECT), a SET, or an ask (one script over
  // all its keys).
  struct Pending {
    uint64_t ticket = 0;  // 0: a SET or a login command
    int64_t sent_ms = 0;
    std::vector<std::string> keys;
    std::vector<Lookup> lookups;
    std::string login_failure;  // a login command's: the message if refused
    bool server_info = false;   // INFO server, asked for on_server
    std::string loss_key;       // a SET's, when its loss is reported (set_nowait)
  };
  void report_lost(const std::string& key) const {
    if (on_set_lost && enabled()) on_set_lost(key);
  }
  // Set by consume() (a refused login, a refused lookup script): read_replies fails the connection.
  std::string fail_connection_;
  bool script_refused_ = false;  // the last lookup's script was refused (ACL, renamed EVAL)
  // A login command's reply is still to come (they lead a new connection's queue).
  bool logging_in() const { return !pending_.empty() && !pending_.front().login_failure.empty(); }
  std::deque<Pending> pending_;
  int asks_pending_ = 0;
  uint64_t next_ticket_ = 1;
  std::vector<Answer> answers_;
};

}  // namespace npc_scale
