#include "l2_doubts.hpp"

#include <cstring>
#include <new>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace npc_scale {

size_t L2Doubts::bytes_for(uint32_t slots) {
  return sizeof(L2Doubts) + static_cast<size_t>(slots) * sizeof(uint64_t);
}

L2Doubts* L2Doubts::init(void* mem, uint32_t slots) {
  auto* d = new (mem) L2Doubts();
  d->capacity_ = slots;
  d->adds_ = 0;
  d->reset();
  return d;
}

uint64_t L2Doubts::hash(std::string_view key) {
  uint64_t h = XXH3_64bits(key.data(), key.size());
  return h == 0 ? 1 : h;  // 0 marks an empty slot
}

int64_t L2Doubts::find(uint64_t hash) const {
  const uint32_t mask = capacity_ - 1;
  for (uint32_t i = home(hash), n = 0; n < capacity_; i = (i + 1) & mask, ++n) {
    if (slots()[i] == hash) return i;
    if (slots()[i] == 0) return -1;
  }
  return -1;
}

L2Doubts::Doubt L2Doubts::check(uint64_t hash) const {
  if (find(hash) >= 0) return Doubt::key;
  return all_ ? Doubt::all : Doubt::none;
}

void L2Doubts::add_all() {
  ++adds_;
  all_ = true;
}

void L2Doubts::add(uint64_t hash) {
  ++adds_;
  if (all_ || find(hash) >= 0) return;
  // Kept under 3/4 full, so probes stay short and always meet an empty slot.
  if (static_cast<uint64_t>(count_ + 1) * 4 > static_cast<uint64_t>(capacity_) * 3) {
    all_ = true;
    return;
  }
  const uint32_t mask = capacity_ - 1;
  uint32_t i = home(hash);
  while (slots()[i] != 0) i = (i + 1) & mask;
  slots()[i] = hash;
  ++count_;
}

void L2Doubts::remove(uint64_t hash) {
  int64_t found = find(hash);
  if (found < 0) return;
  // Backward-shift deletion: later members of the probe run move up into
  // the hole when their home allows, so no lookup stops early at it.
  const uint32_t mask = capacity_ - 1;
  uint32_t hole = static_cast<uint32_t>(found);
  slots()[hole] = 0;
  --count_;
  for (uint32_t j = (hole + 1) & mask; slots()[j] != 0; j = (j + 1) & mask) {
    uint32_t h = home(slots()[j]);
    // Movable unless its home lies cyclically in (hole, j].
    bool home_after_hole = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
    if (home_after_hole) continue;
    slots()[hole] = slots()[j];
    slots()[j] = 0;
    hole = j;
  }
}

bool L2Doubts::clear(uint64_t since) {
  if (adds_ != since) return false;
  reset();
  return true;
}

void L2Doubts::reset() {
  count_ = 0;
  all_ = false;
  std::memset(slots(), 0, static_cast<size_t>(capacity_) * sizeof(uint64_t));
}

}  // namespace npc_scale
