#include "l2_doubt_table.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core/steady_clock.hpp"
#include "guard.hpp"

extern "C" {
#include "catalog/pg_control.h"
#include "common/controldata_utils.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

namespace npc_scale {

namespace {

constexpr const char* kTranche = "npc_scale_l2_doubts";
// 12,288 doubted keys before it overflows (3/4 of the slots), in 256 kB:
// enough for a long outage of a game that overwrites a few keys a second.
constexpr uint32_t kSlots = 16384;

constexpr size_t kServerIdBytes = 64;  // a Redis run_id is 40 hex digits

struct Header {
  pg_atomic_uint32 active;  // 1 while anything is doubted: readers skip the lock at 0
  int64_t since_ms;         // under the lock: when it last became active (steady clock)
  bool marker_made;         // under the lock: the marker file is there (made while active)
  char server[kServerIdBytes];  // under the lock: the run_id of the Redis last seen ("" unknown)
};

Header* g_header = nullptr;
L2Doubts* g_doubts = nullptr;
LWLock* g_lock = nullptr;

// The set lives in shared memory, which a restart (or a crash) of the
// server starts afresh, while Redis keeps the values it was doubted for. A
// file in the data directory says that something is doubted: made when the
// set stops being empty, removed when it is empty again. A server that
// starts and finds it doubts every key, until the maintenance worker has
// emptied Redis. (Not synced to disk: a crash of the machine that loses it
// leaves the control file saying the server did not shut down cleanly,
// which doubts every key as well.)
char g_marker[MAXPGPATH];
// The Redis server last seen (its run_id), kept in a file for the same
// reason: a Redis that restarted while this server was down is a new one.
char g_server_file[MAXPGPATH];

void read_server_file(char* out) {
  out[0] = '\0';
  const int fd = open(g_server_file, O_RDONLY);
  if (fd < 0) return;
  const ssize_t n = read(fd, out, kServerIdBytes - 1);
  close(fd);
  out[n > 0 ? n : 0] = '\0';
}

void write_server_file(const char* id) {
  // Written aside and renamed: a crash leaves the old one or the new one.
  char tmp[MAXPGPATH + 8];
  snprintf(tmp, sizeof(tmp), "%s.tmp", g_server_file);
  const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  const size_t len = strlen(id);
  const bool written = write(fd, id, len) == static_cast<ssize_t>(len);
  close(fd);
  if (!written || rename(tmp, g_server_file) != 0) unlink(tmp);
}

// Whether the marker is there now.
bool mark_doubted(bool doubted) {
  if (g_marker[0] == '\0') return false;
  if (doubted) {
    const int fd = open(g_marker, O_WRONLY | O_CREAT, 0600);
    if (fd < 0) return false;
    close(fd);
    return true;
  }
  unlink(g_marker);
  return false;
}

// Whether the server before this one shut down cleanly. A crash (or an
// immediate shutdown) may have cut a COMMIT short between L3 and Redis,
// before its keys were doubted; after one the control file still says the
// server was in production. Unknown (unreadable) counts as unclean.
bool last_shutdown_clean() noexcept {
  try {
    return pg_call([] {
      bool crc_ok = false;
      ControlFileData* control = get_controlfile(DataDir, &crc_ok);
      const bool clean = crc_ok && (control->state == DB_SHUTDOWNED || control->state == DB_SHUTDOWNED_IN_RECOVERY);
      pfree(control);
      return clean;
    });
  } catch (...) {
    return false;
  }
}

Size doubts_offset() { return MAXALIGN(sizeof(Header)); }

// Runs fn on the set under its lock. fn is plain C++ that neither throws
// nor allocates. Not through pg_call (these run where nothing may throw):
// LWLockAcquire raises only for a process that already holds 200 LWLocks,
// and no caller holds one. A writer sets `active` before the release.
template <typename Fn>
auto locked(LWLockMode mode, Fn&& fn) {
  LWLockAcquire(g_lock, mode);
  auto result = fn(*g_doubts);
  if (mode == LW_EXCLUSIVE) {
    const uint32 active = g_doubts->size() > 0 || g_doubts->all() ? 1 : 0;
    const uint32 was = pg_atomic_read_u32(&g_header->active);
    if (active && !was) g_header->since_ms = steady_now_ms();
    // Under the lock, in the order of the changes; a marker that could not
    // be made (a full disk) is tried again at each change after.
    if (active && !g_header->marker_made) g_header->marker_made = mark_doubted(true);
    if (!active && was) g_header->marker_made = mark_doubted(false);
    pg_atomic_write_u32(&g_header->active, active);
  }
  LWLockRelease(g_lock);
  return result;
}

}  // namespace

Size l2_doubt_table_size() { return doubts_offset() + L2Doubts::bytes_for(kSlots); }

void l2_doubt_table_request() { RequestNamedLWLockTranche(kTranche, 1); }

void l2_doubt_table_attach() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  char* raw = static_cast<char*>(ShmemInitStruct("npc_scale L2 doubts", l2_doubt_table_size(), &found));
  g_header = reinterpret_cast<Header*>(raw);
  g_lock = &GetNamedLWLockTranche(kTranche)[0].lock;
  snprintf(g_marker, sizeof(g_marker), "%s/npc_scale_l2_doubted", DataDir);
  snprintf(g_server_file, sizeof(g_server_file), "%s/npc_scale_l2_server", DataDir);
  if (!found) {
    pg_atomic_init_u32(&g_header->active, 0);
    g_header->since_ms = 0;
    g_header->marker_made = access(g_marker, F_OK) == 0;
    read_server_file(g_header->server);
    g_doubts = L2Doubts::init(raw + doubts_offset(), kSlots);
    // The server before this one (or before a crash) had doubts it did not
    // settle, or ended without knowing.
    if (g_header->marker_made || !last_shutdown_clean()) {
      g_doubts->add_all();
      pg_atomic_init_u32(&g_header->active, 1);
      g_header->since_ms = steady_now_ms();
      if (!g_header->marker_made) g_header->marker_made = mark_doubted(true);
    }
  } else {
    g_doubts = L2Doubts::attach(raw + doubts_offset());
  }
  LWLockRelease(AddinShmemInitLock);
}

void l2_doubt(const std::string& key) noexcept {
  if (!g_doubts) return;
  const uint64_t h = L2Doubts::hash(key);
  locked(LW_EXCLUSIVE, [&](L2Doubts& d) { d.add(h); return 0; });
}

void l2_doubt_everything() noexcept {
  if (!g_doubts) return;
  locked(LW_EXCLUSIVE, [](L2Doubts& d) { d.add_all(); return 0; });
}

void l2_doubt_everything_once() noexcept {
  if (!g_doubts) return;
  if (pg_atomic_read_u32(&g_header->active) != 0 && locked(LW_SHARED, [](L2Doubts& d) { return d.all(); })) return;
  l2_doubt_everything();
}

L2Doubts::Doubt l2_doubt_of(const std::string& key) noexcept {
  if (!g_doubts) return L2Doubts::Doubt::none;
  // Ordered after the caller's earlier reads (its L1 miss, its Redis GET).
  pg_memory_barrier();
  if (pg_atomic_read_u32(&g_header->active) == 0) return L2Doubts::Doubt::none;
  const uint64_t h = L2Doubts::hash(key);
  return locked(LW_SHARED, [&](L2Doubts& d) { return d.check(h); });
}

uint64_t l2_doubt_stamp() noexcept {
  if (!g_doubts) return 0;
  return locked(LW_SHARED, [](L2Doubts& d) { return d.stamp(); });
}

void l2_trust(const std::string& key, uint64_t stamp) noexcept {
  if (!g_doubts || pg_atomic_read_u32(&g_header->active) == 0) return;
  const uint64_t h = L2Doubts::hash(key);
  locked(LW_EXCLUSIVE, [&](L2Doubts& d) { return d.remove(h, stamp); });
}

void l2_trust_everything(uint64_t stamp, int64_t sent_ms) noexcept {
  if (!g_doubts || pg_atomic_read_u32(&g_header->active) == 0) return;
  locked(LW_EXCLUSIVE, [&](L2Doubts& d) {
    d.clear(stamp);
    // What is left came in after the clear was sent.
    g_header->since_ms = sent_ms;
    return 0;
  });
}

bool l2_note_server(const std::string& run_id) noexcept {
  if (!g_doubts || run_id.empty() || run_id.size() >= kServerIdBytes) return false;
  // Nearly always the one known: each new connection asks.
  if (locked(LW_SHARED, [&](L2Doubts&) { return strcmp(g_header->server, run_id.c_str()) == 0; })) return false;
  return locked(LW_EXCLUSIVE, [&](L2Doubts& d) {
    if (strcmp(g_header->server, run_id.c_str()) == 0) return false;
    // Another server, or the same one restarted: what it holds may be older
    // than what it acknowledged (a snapshot reloaded, a lagging replica).
    // The first one ever seen is trusted.
    const bool another = g_header->server[0] != '\0';
    if (another) d.add_all();
    memcpy(g_header->server, run_id.c_str(), run_id.size() + 1);
    write_server_file(g_header->server);
    return another;
  });
}

L2DoubtStats l2_doubt_stats() noexcept {
  if (!g_doubts) return {};
  return locked(LW_SHARED, [](L2Doubts& d) {
    const bool any = d.size() > 0 || d.all();
    return L2DoubtStats{static_cast<int64_t>(d.size()), d.all(), any ? g_header->since_ms : 0};
  });
}

}  // namespace npc_scale
