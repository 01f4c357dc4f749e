#include "l2_doubt_table.hpp"

extern "C" {
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
}

namespace npc_scale {

namespace {

// 12,288 doubted keys before it overflows (3/4 of the slots), in 128 kB:
// enough for a long outage of a game that overwrites a few keys a second.
constexpr uint32_t kSlots = 16384;

struct Header {
  slock_t mutex;
};

Header* g_header = nullptr;
L2Doubts* g_doubts = nullptr;

Size doubts_offset() { return MAXALIGN(sizeof(Header)); }

// Runs fn on the set under its spinlock. fn is plain C++ that neither
// throws nor allocates; before attach (no shared memory), nothing is doubted.
template <typename Fn>
auto locked(Fn&& fn) {
  SpinLockAcquire(&g_header->mutex);
  auto result = fn(*g_doubts);
  SpinLockRelease(&g_header->mutex);
  return result;
}

}  // namespace

Size l2_doubt_table_size() { return doubts_offset() + L2Doubts::bytes_for(kSlots); }

void l2_doubt_table_attach() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  char* raw = static_cast<char*>(ShmemInitStruct("npc_scale L2 doubts", l2_doubt_table_size(), &found));
  g_header = reinterpret_cast<Header*>(raw);
  if (!found) {
    SpinLockInit(&g_header->mutex);
    g_doubts = L2Doubts::init(raw + doubts_offset(), kSlots);
  } else {
    g_doubts = L2Doubts::attach(raw + doubts_offset());
  }
  LWLockRelease(AddinShmemInitLock);
}

void l2_doubt(const std::string& key) {
  if (!g_doubts) return;
  const uint64_t h = L2Doubts::hash(key);
  locked([&](L2Doubts& d) { d.add(h); return 0; });
}

void l2_doubt_everything() {
  if (!g_doubts) return;
  locked([](L2Doubts& d) { d.add_all(); return 0; });
}

L2Doubts::Doubt l2_doubt_of(const std::string& key) {
  if (!g_doubts) return L2Doubts::Doubt::none;
  const uint64_t h = L2Doubts::hash(key);
  return locked([&](L2Doubts& d) { return d.check(h); });
}

void l2_trust(const std::string& key) {
  if (!g_doubts) return;
  const uint64_t h = L2Doubts::hash(key);
  locked([&](L2Doubts& d) { d.remove(h); return 0; });
}

uint64_t l2_doubt_stamp() {
  if (!g_doubts) return 0;
  return locked([](L2Doubts& d) { return d.stamp(); });
}

bool l2_trust_everything(uint64_t stamp) {
  if (!g_doubts) return true;
  return locked([&](L2Doubts& d) { return d.clear(stamp); });
}

L2DoubtStats l2_doubt_stats() {
  if (!g_doubts) return {};
  return locked([](L2Doubts& d) { return L2DoubtStats{static_cast<int64_t>(d.size()), d.all()}; });
}

}  // namespace npc_scale
