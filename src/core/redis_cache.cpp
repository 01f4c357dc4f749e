#include "redis_cache.hpp"

#include "steady_clock.hpp"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

namespace npc_scale {

namespace {

constexpr int64_t kFirstBackoffMs = 100;
constexpr int64_t kMaxBackoffMs = 5000;
constexpr size_t kMaxUnreadReplies = 64;
constexpr int64_t kUnreadSetReplyTimeoutMs = 5000;

// An ask: each key's PTTL and value, read at one instant (see ask()).
// pcall: a key of the wrong type is an error for that key alone.
constexpr const char* kLookupScript =
    "local out = {} "
    "for i, k in ipairs(KEYS) do "
    "out[2 * i - 1] = redis.pcall('PTTL', k) "
    "out[2 * i] = redis.pcall('GET', k) "
    "end "
    "return out";

// The prefix as a literal in a SCAN MATCH pattern: its glob characters
// escaped, so clearing "game[1]:" never matches "game1:"'s keys.
std::string glob_escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

timeval ms_to_timeval(int ms) {
  timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

Reply command(redisContext* ctx, std::initializer_list<std::string> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return Reply(static_cast<redisReply*>(
      redisCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lens.data())));
}

}  // namespace

RedisCache::~RedisCache() {
  on_set_lost = nullptr;
  disconnect();
}

void RedisCache::disconnect() {
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
  if (connecting_fd_ >= 0) close(connecting_fd_);
  connecting_fd_ = -1;
  lookup_.reset();
  answer_pending_unavailable();  // their replies went with the connection
}

void RedisCache::answer_pending_unavailable() {
  for (Pending& p : pending_) {
    if (p.ticket == 0) {
      // A SET's reply went with the connection: it may not have landed.
      if (!p.loss_key.empty()) report_lost(p.loss_key);
      continue;
    }
    for (Lookup& l : p.lookups) l = Lookup{Result::unavailable, {}, -1};
    answers_.push_back(Answer{p.ticket, std::move(p.keys), std::move(p.lookups)});
  }
  pending_.clear();
  asks_pending_ = 0;
}

int RedisCache::fd() const { return ctx_ ? ctx_->fd : -1; }

int64_t RedisCache::ask_timeout_in_ms(int64_t now_ms) const {
  if (asks_pending_ == 0) return -1;
  // Replies come in order: the oldest command's is the one that is late.
  return std::max<int64_t>(0, pending_.front().sent_ms + config_.command_timeout_ms - now_ms);
}

void RedisCache::configure(const RedisConfig& config) {
  if (config == config_) return;
  config_ = config;
  disconnect();
  next_attempt_ms_ = 0;
  backoff_ms_ = 0;
}

void RedisCache::fail(const std::string& why, int64_t now_ms) {
  errors_++;
  connection_failures_++;
  disconnect();
  backoff_ms_ = backoff_ms_ == 0 ? kFirstBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
  next_attempt_ms_ = now_ms + backoff_ms_;
  if (up_) {
    up_ = false;
    if (on_state_change) on_state_change(false, why);
  }
}

void RedisCache::note_error_reply(const void* raw) {
  const redisReply* r = static_cast<const redisReply*>(raw);
  errors_++;
  last_reply_error_ = r->str ? r->str : "error reply";
}

std::string RedisCache::run_id_of(std::string_view info) {
  constexpr std::string_view kField = "run_id:";
  for (size_t at = 0; at < info.size();) {
    size_t end = info.find('\n', at);
    if (end == std::string_view::npos) end = info.size();
    std::string_view line = info.substr(at, end - at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, kField.size()) == kField) return std::string(line.substr(kField.size()));
    at = end + 1;
  }
  return {};
}

void RedisCache::consume(void* raw) {
  Reply r(static_cast<redisReply*>(raw));
  if (pending_.front().server_info) {
    // An error (INFO renamed away, an ACL without it) leaves the server
    // unknown: the connection is fine, and no command of the caller's failed.
    std::string run_id;
    if (r->type == REDIS_REPLY_STRING && r->str) {
      run_id = run_id_of(std::string_view(r->str, r->len));
    }
    pending_.pop_front();
    if (!up_ && r->type != REDIS_REPLY_ERROR) mark_up();
    if (!run_id.empty() && on_server) on_server(run_id);
    return;
  }
  if (!pending_.front().login_failure.empty()) {
    // AUTH or SELECT: refused, the connection is failed (read_replies);
    // the last one through, Redis is up.
    const bool refused = r->type == REDIS_REPLY_ERROR;
    if (refused) fail_connection_ = pending_.front().login_failure;
    pending_.pop_front();
    if (!refused && !logging_in()) mark_up();
    return;
  }
  // An error reply (OOM on a SET under noeviction, WRONGTYPE on a key
  // someone else wrote under the prefix) concerns its command only: that
  // value is not cached, that key is a miss. The connection, and the replies
  // pipelined behind it, are fine.
  const bool error_reply = r->type == REDIS_REPLY_ERROR;
  if (error_reply) note_error_reply(r.get());
  Pending& p = pending_.front();
  // Reported after the pop below (a callback may throw).
  std::string lost_key = error_reply ? std::move(p.loss_key) : std::string();
  bool lookup_worked = false;  // the first since the script was refused
  if (p.ticket != 0) {
    // A Redis that refuses the script itself (an ACL without @scripting, EVAL
    // renamed away) would make every lookup a miss while it looked up: it is
    // reported down, with the reason, and stays down (reconnects back off)
    // until a lookup succeeds.
    if (r->type == REDIS_REPLY_ERROR && r->str &&
        (strncmp(r->str, "NOPERM", 6) == 0 || strncmp(r->str, "ERR unknown command", 19) == 0)) {
      fail_connection_ = std::string("Redis refuses the lookup script (EVAL): ") + r->str;
      script_refused_ = true;
      for (Lookup& l : p.lookups) l.result = Result::unavailable;
    }
    // kLookupScript's array: PTTL, GET per key, each an error of its own
    // (pcall). Any other error reply leaves every key a miss.
    if (r->type == REDIS_REPLY_ARRAY && r->elements == p.lookups.size() * 2) {
      lookup_worked = script_refused_;
      script_refused_ = false;
      for (size_t i = 0; i < p.lookups.size(); i++) {
        const redisReply* ttl = r->element[2 * i];
        const redisReply* got = r->element[2 * i + 1];
        if (ttl->type == REDIS_REPLY_ERROR) note_error_reply(ttl);
        if (got->type == REDIS_REPLY_ERROR) note_error_reply(got);
        // -1: no expiry. 0 (under a millisecond left): not known to be ahead, a miss.
        if (ttl->type == REDIS_REPLY_INTEGER && (ttl->integer == -1 || ttl->integer > 0) &&
            got->type == REDIS_REPLY_STRING) {
          p.lookups[i] = Lookup{Result::hit, std::string(got->str, got->len), ttl->integer};
        }
      }
    }
    answers_.push_back(Answer{p.ticket, std::move(p.keys), std::move(p.lookups)});
    asks_pending_--;
  }
  pending_.pop_front();
  if (!lost_key.empty()) report_lost(lost_key);
  // After the pop: its callback may throw. A reply shows the connection
  // works, but not an error reply: a Redis at maxclients writes one
  // ("max number of clients reached") and then closes.
  if (lookup_worked || (!up_ && !error_reply)) mark_up();
}

bool RedisCache::read_replies(int64_t now_ms, bool wait) {
  const int64_t entered = wait ? steady_now_ms() : 0;
  while (!pending_.empty()) {
    void* raw = nullptr;
    // Waiting: from the socket (command timeout). Not: only what is buffered.
    int rc = wait ? redisGetReply(ctx_, &raw) : redisGetReplyFromReader(ctx_, &raw);
    if (rc != REDIS_OK) {
      const int err = errno;
      // A wait that ran out the command timeout (the blocking socket's
      // EAGAIN): the back-off runs from its end, on the caller's clock moved
      // on by the wait. From the call's start, a timeout longer than the
      // first back-off would let the very next command reconnect to the
      // Redis that just failed to answer. Other failures (a closed
      // connection) did not wait: the caller's clock as given.
      const bool timed_out = wait && ctx_->err == REDIS_ERR_IO && (err == EAGAIN || err == EWOULDBLOCK);
      fail(ctx_->errstr, timed_out ? now_ms + (steady_now_ms() - entered) : now_ms);
      return false;
    }
    if (raw == nullptr) return true;  // not waiting, and the rest has not arrived yet
    consume(raw);
    if (!fail_connection_.empty()) {
      std::string why;
      why.swap(fail_connection_);
      fail(why, now_ms);
      return false;
    }
  }
  return true;
}

void RedisCache::read_arrived(int64_t now_ms) {
  while (!pending_.empty()) {
    pollfd p{ctx_->fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return;
    // Readable (or closed): one read returns at once with what is there.
    if (redisBufferRead(ctx_) != REDIS_OK) {
      fail(ctx_->errstr, now_ms);
      return;
    }
    if (!read_replies(now_ms, false)) return;
  }
}

bool RedisCache::room_for_another(int64_t now_ms) {
  if (ctx_ == nullptr) return false;
  if (pending_.size() < kMaxUnreadReplies) return true;
  read_arrived(now_ms);
  fail_if_overdue(now_ms);
  // Reading may have failed the connection (EOF, a reset): no context then.
  return ctx_ != nullptr && pending_.size() < kMaxUnreadReplies;
}

void RedisCache::fail_if_overdue(int64_t now_ms) {
  if (ctx_ == nullptr || pending_.empty()) return;
  // Replies come in order: the oldest command's is the late one. An ask is
  // waited for at most the command timeout. SET replies nobody waits for
  // get longer (a slow Redis is not a down one), but not forever: with only
  // SETs unread, nothing else would notice a host that went away.
  const int64_t limit = asks_pending_ > 0
                            ? config_.command_timeout_ms
                            : std::max<int64_t>(config_.command_timeout_ms, kUnreadSetReplyTimeoutMs);
  if (now_ms >= pending_.front().sent_ms + limit) {
    fail("no reply within " + std::to_string(limit) + " ms", now_ms);
  }
}

std::vector<RedisCache::Answer> RedisCache::take_answers(int64_t now_ms) {
  read_arrived(now_ms);
  fail_if_overdue(now_ms);
  std::vector<Answer> out;
  out.swap(answers_);
  return out;
}

bool RedisCache::flush_output(int64_t now_ms) {
  // A blocking socket takes a small command at once, so it is in Redis
  // about as soon as with a command that waits for its reply.
  int done = 0;
  while (!done) {
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) {
      fail(ctx_->errstr, now_ms);
      return false;
    }
  }
  return true;
}

bool RedisCache::ensure_connected(int64_t now_ms, bool drain, bool even_backing_off) {
  if (!enabled()) return false;
  if (!ctx_) {
    if (connecting_fd_ < 0) {
      // Backing off: a miss, cheaply.
      if (!lookup_ && now_ms < next_attempt_ms_ && !even_backing_off) return false;
      if (!start_connect(now_ms)) return false;
    }
    if (!finish_connect(now_ms)) return false;
  }
  // Replies come in command order: what the login, set_nowait() and ask() left goes first.
  return !drain || read_replies(now_ms, true);
}

bool RedisCache::start_connect(int64_t now_ms) {
  if (config_.connect_in_background) {
    if (!lookup_) {
      lookup_ = start_lookup ? start_lookup(config_.host, config_.port)
                             : std::make_unique<HostLookup>(config_.host, config_.port);
      lookup_started_ms_ = now_ms;
      lookup_overdue_ = false;
    }
    switch (lookup_->poll()) {
      case HostLookup::State::pending:
        // A miss for now. A lookup that outlasts the connect timeout (a DNS
        // server that does not answer) is reported once, as down, and left
        // to run: starting it again would only wait again.
        if (!lookup_overdue_ && now_ms - lookup_started_ms_ >= config_.connect_timeout_ms) {
          lookup_overdue_ = true;
          errors_++;
          if (up_) {
            up_ = false;
            if (on_state_change) {
              on_state_change(false, "look up " + config_.host + ": no answer after " +
                                         std::to_string(config_.connect_timeout_ms) + " ms");
            }
          }
        }
        return false;
      case HostLookup::State::failed: {
        std::string why = lookup_->error();
        lookup_.reset();
        fail(why, now_ms);
        return false;
      }
      case HostLookup::State::done:
        addresses_ = lookup_->addresses();
        lookup_.reset();
        break;
    }
  } else {
    std::string why;
    if (!HostLookup::resolve_now(config_.host, config_.port, &addresses_, &why)) {
      fail(why, now_ms);
      return false;
    }
  }
  next_address_ = 0;
  return connect_next_address(now_ms, "no address");
}

bool RedisCache::connect_next_address(int64_t now_ms, const std::string& why) {
  std::string last = why;
  while (next_address_ < addresses_.size()) {
    const SocketAddress& a = addresses_[next_address_++];
    int fd = socket(a.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && (connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0 ||
                    errno == EINPROGRESS)) {
      connecting_fd_ = fd;
      connect_deadline_ms_ = now_ms + config_.connect_timeout_ms;
      return true;
    }
    last = std::strerror(errno);
    if (fd >= 0) close(fd);
  }
  fail("connect to " + config_.host + ":" + std::to_string(config_.port) + ": " + last, now_ms);
  return false;
}

bool RedisCache::finish_connect(int64_t now_ms) {
  const auto entered = std::chrono::steady_clock::now();
  auto now = [&] {  // the caller's clock, moved on by the time spent waiting here
    return now_ms + std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - entered).count();
  };
  for (;;) {
    const int64_t wait_ms =
        config_.connect_in_background ? 0 : std::max<int64_t>(0, connect_deadline_ms_ - now());
    pollfd p{connecting_fd_, POLLOUT, 0};
    int ready = poll(&p, 1, static_cast<int>(wait_ms));
    int err = 0;
    if (ready < 0) {
      if (errno == EINTR) continue;  // a signal: wait out the rest
      err = errno;
    } else if (ready == 0) {
      if (now() < connect_deadline_ms_) return false;  // under way (background): a miss for now
      err = ETIMEDOUT;
    } else {
      socklen_t len = sizeof(err);
      if (getsockopt(connecting_fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err == 0) break;
    close(connecting_fd_);
    connecting_fd_ = -1;
    if (!connect_next_address(now(), std::strerror(err))) return false;
  }
  const std::string where = config_.host + ":" + std::to_string(config_.port);
  // Connected: the socket goes to hiredis as a blocking one, as its own
  // connect leaves it (commands are bounded by the command timeout).
  int fd = connecting_fd_;
  connecting_fd_ = -1;
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  redisContext* c = redisConnectFd(fd);
  if (c == nullptr || c->err) {
    std::string why = c ? c->errstr : "cannot allocate a Redis context";
    if (c) {
      redisFree(c);  // closes fd
    } else {
      close(fd);
    }
    fail("connect to " + where + ": " + why, now_ms);
    return false;
  }
  redisSetTimeout(c, ms_to_timeval(config_.command_timeout_ms));
  ctx_ = c;
  // Log in: AUTH and SELECT go ahead of the first command. A blocking
  // client reads their replies now; an event loop's (connect_in_background)
  // reads them with the replies behind them, so a slow Redis never holds
  // its loop. Either way Redis is reported up once they are through.
  std::vector<std::pair<std::vector<std::string>, std::string>> login;
  // The password itself is never part of a message.
  if (!config_.password.empty()) login.push_back({{"AUTH", config_.password}, "AUTH failed"});
  if (config_.db != 0) {
    const std::string db = std::to_string(config_.db);
    login.push_back({{"SELECT", db}, "SELECT " + db + " failed"});
  }
  // Without a login, Redis is reported up (and the back-off reset) by its
  // first reply, not by the TCP connect: a server that accepts and then
  // drops connections (maxclients, a proxy without its backend) would
  // otherwise be "up" and "down" again every 100 ms, never backing off.
  // Which server this is, asked behind the login and ahead of every command.
  const bool ask_server = static_cast<bool>(on_server);
  if (login.empty() && !ask_server) return true;
  if (ask_server) login.push_back({{"INFO", "server"}, ""});
  for (auto& [args, failure] : login) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
      fail(ctx_->errstr, now_ms);
      return false;
    }
    Pending p;
    p.sent_ms = now_ms;
    p.server_info = failure.empty();  // the INFO: nothing to fail the connection for
    p.login_failure = std::move(failure);
    pending_.push_back(std::move(p));
  }
  if (!flush_output(now_ms)) return false;
  return config_.connect_in_background || read_replies(now_ms, true);
}

void RedisCache::mark_up() {
  if (script_refused_) return;  // logged in, but lookups are not known to work
  backoff_ms_ = 0;
  if (!up_) {
    up_ = true;
    if (on_state_change) on_state_change(true, "connected");
  }
}

RedisCache::Result RedisCache::get(const std::string& key, std::string* value, int64_t now_ms,
                                   int64_t* ttl_ms) {
  std::vector<Lookup> r = get_many({key}, now_ms);
  if (r[0].result == Result::hit) {
    *value = std::move(r[0].value);
    if (ttl_ms) *ttl_ms = r[0].ttl_ms;
  }
  return r[0].result;
}

std::vector<RedisCache::Lookup> RedisCache::get_many(const std::vector<std::string>& keys,
                                                     int64_t now_ms) {
  // This call waits for Redis anyway: 64 replies behind, it waits for them
  // first (the command timeout at most) rather than find no room for its
  // own command and be a miss.
  if (ctx_ != nullptr && pending_.size() >= kMaxUnreadReplies) read_replies(now_ms, true);
  const uint64_t ticket = ask(keys, now_ms);
  if (asks_pending_ > 0) read_replies(now_ms, true);  // up to and including this ask's
  auto it = std::find_if(answers_.begin(), answers_.end(),
                         [&](const Answer& a) { return a.ticket == ticket; });
  std::vector<Lookup> out = std::move(it->lookups);
  answers_.erase(it);
  return out;
}

uint64_t RedisCache::ask(const std::vector<std::string>& keys, int64_t now_ms) {
  Pending p;
  p.ticket = next_ticket_++;
  p.sent_ms = now_ms;
  p.lookups.resize(keys.size());
  // Any failure on the way makes the whole ask unavailable.
  auto unavailable = [&] {
    for (Lookup& l : p.lookups) l = Lookup{Result::unavailable, {}, -1};
    answers_.push_back(Answer{p.ticket, std::move(p.keys), std::move(p.lookups)});
    return p.ticket;
  };
  p.keys = keys;
  if (keys.empty()) {
    answers_.push_back(Answer{p.ticket, {}, {}});
    return p.ticket;
  }
  // A Redis that far behind is treated as unavailable for this ask, not waited for.
  if (!ensure_connected(now_ms, false) || !room_for_another(now_ms)) return unavailable();
  // One script reads PTTL and GET for every key: one round trip, and each
  // key's value and time left read at one instant. Sent apart, a SET landing
  // between the two could pair its new value with the old key's "no
  // expiry", and L1 would keep that value for good. Not MULTI/EXEC: a full
  // Redis (maxmemory, noeviction) refuses to queue commands, even reads; a
  // script without a #! line is refused only the writes it makes.
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const std::string& key : keys) full.push_back(config_.prefix + key);
  const std::string numkeys = std::to_string(keys.size());
  std::vector<const char*> argv = {"EVAL", kLookupScript, numkeys.c_str()};
  std::vector<size_t> lens = {4, strlen(kLookupScript), numkeys.size()};
  for (const std::string& f : full) {
    argv.push_back(f.c_str());
    lens.push_back(f.size());
  }
  if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
    fail(ctx_->errstr, now_ms);
    return unavailable();
  }
  if (!flush_output(now_ms)) return unavailable();
  const uint64_t ticket = p.ticket;
  pending_.push_back(std::move(p));
  asks_pending_++;
  return ticket;
}

bool RedisCache::set(const std::string& key, const std::string& value, int64_t ttl_s,
                     int64_t now_ms) {
  // The same command, and then its reply (with any set_nowait() left before
  // it): stored only if no reply was an error.
  const uint64_t errors_before = errors_;
  return set_nowait(key, value, ttl_s, now_ms) && read_replies(now_ms, true) &&
         errors_ == errors_before;
}

bool RedisCache::set_nowait(const std::string& key, const std::string& value, int64_t ttl_s,
                            int64_t now_ms, WhenBehind behind, bool report_loss) {
  auto lost = [&] {
    if (report_loss) report_lost(key);
    return false;
  };
  // Left unread up to a bound: past it the value is not cached in L2 rather
  // than the caller waiting for Redis. Not before the login is through: a
  // SET behind a refused AUTH or SELECT could still land in the wrong
  // database. (An ask may wait behind it: its answer is only read.)
  if (!ensure_connected(now_ms, false)) return lost();
  if (behind == WhenBehind::wait && (logging_in() || pending_.size() >= kMaxUnreadReplies) &&
      !read_replies(now_ms, true)) {
    return lost();  // no reply within the command timeout: the connection is failed
  }
  if (logging_in()) read_arrived(now_ms);
  if (logging_in() || !room_for_another(now_ms)) return lost();
  const std::string full = config_.prefix + key;
  const std::string ttl = std::to_string(ttl_s);
  const char* argv[] = {"SET", full.c_str(), value.data(), "EX", ttl.c_str()};
  const size_t lens[] = {3, full.size(), value.size(), 2, ttl.size()};
  if (redisAppendCommandArgv(ctx_, ttl_s > 0 ? 5 : 3, argv, lens) != REDIS_OK) {
    fail(ctx_->errstr, now_ms);
    return lost();
  }
  // Queued first: if the write fails, the connection's failure reports it.
  Pending p;
  p.sent_ms = now_ms;
  if (report_loss) p.loss_key = key;
  pending_.push_back(std::move(p));
  return flush_output(now_ms);
}

std::optional<bool> RedisCache::del(const std::string& key, int64_t now_ms, bool even_backing_off) {
  // An invalidation is worth a connect even while backing off: a value left
  // in Redis would come back on the next L1 miss.
  if (!ensure_connected(now_ms, true, even_backing_off)) return std::nullopt;
  Reply r = command(ctx_, {"DEL", config_.prefix + key});
  if (!r || r->type == REDIS_REPLY_ERROR) {
    fail(r ? r->str : ctx_->errstr, now_ms);
    return std::nullopt;
  }
  return r->type == REDIS_REPLY_INTEGER && r->integer > 0;
}

bool RedisCache::read_outstanding(int64_t now_ms) {
  if (ctx_ == nullptr || pending_.empty()) return true;
  return read_replies(now_ms, true);
}

int64_t RedisCache::clear(int64_t now_ms) { return sweep(now_ms, {}, /*even_backing_off=*/true); }

int64_t RedisCache::sweep(int64_t now_ms, const std::function<bool(std::string_view key)>& doomed,
                          bool even_backing_off) {
  if (!ensure_connected(now_ms, true, even_backing_off)) return -1;
  int64_t deleted = 0;
  std::string cursor = "0";
  do {
    Reply r = command(ctx_, {"SCAN", cursor, "MATCH", glob_escaped(config_.prefix) + "*", "COUNT", "500"});
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      fail(r && r->type == REDIS_REPLY_ERROR ? r->str : "SCAN failed", now_ms);
      return -1;
    }
    cursor.assign(r->element[0]->str, r->element[0]->len);
    // One UNLINK per batch: a round trip per SCAN page, not per key.
    redisReply* keys = r->element[1];
    std::vector<const char*> argv = {"UNLINK"};
    std::vector<size_t> lens = {6};
    for (size_t i = 0; i < keys->elements; i++) {
      const redisReply* k = keys->element[i];
      const std::string_view full(k->str, k->len);
      if (doomed && (full.size() < config_.prefix.size() || !doomed(full.substr(config_.prefix.size())))) {
        continue;
      }
      argv.push_back(k->str);
      lens.push_back(k->len);
    }
    if (argv.size() == 1) continue;
    Reply d(static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!d) {
      fail(ctx_->errstr, now_ms);
      return -1;
    }
    if (d->type != REDIS_REPLY_INTEGER) {  // refused (an ACL): this clear fails, the connection is fine
      if (d->type == REDIS_REPLY_ERROR) note_error_reply(d.get());
      return -1;
    }
    deleted += d->integer;
  } while (cursor != "0");
  return deleted;
}

}  // namespace npc_scale
