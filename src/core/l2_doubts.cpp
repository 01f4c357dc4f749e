#include "l2_doubts.hpp"

#include <cstring>
#include <new>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace npc_scale {

size_t L2Doubts::bytes_for(uint32_t slots) {
  return sizeof(L2Doubts) + static_cast<size_t>(slots) * sizeof(Slot);
}

L2Doubts* L2Doubts::init(void* mem, uint32_t slots) {
  auto* d = new (mem) L2Doubts();
  d->capacity_ = slots;
  d->count_ = 0;
  d->all_ = false;
  d->all_stamp_ = 0;
  d->adds_ = 0;
  std::memset(static_cast<void*>(d->slots()), 0, static_cast<size_t>(slots) * sizeof(Slot));
  return d;
}

uint64_t L2Doubts::hash(std::string_view key) {
  uint64_t h = XXH3_64bits(key.data(), key.size());
  return h == 0 ? 1 : h;  // 0 marks an empty slot
}

int64_t L2Doubts::find(uint64_t hash) const {
  const uint32_t mask = capacity_ - 1;
  for (uint32_t i = home(hash), n = 0; n < capacity_; i = (i + 1) & mask, ++n) {
    if (slots()[i].hash == hash) return i;
    if (slots()[i].hash == 0) return -1;
  }
  return -1;
}

L2Doubts::Doubt L2Doubts::check(uint64_t hash) const {
  if (find(hash) >= 0) return Doubt::key;
  return all_ ? Doubt::all : Doubt::none;
}

void L2Doubts::add_all() {
  all_ = true;
  all_stamp_ = ++adds_;
}

void L2Doubts::add(uint64_t hash) {
  const uint64_t stamp = ++adds_;
  if (int64_t i = find(hash); i >= 0) {
    slots()[i].stamp = stamp;
    return;
  }
  // Kept under 3/4 full, so probes stay short and always meet an empty slot.
  if (static_cast<uint64_t>(count_ + 1) * 4 > static_cast<uint64_t>(capacity_) * 3) {
    all_ = true;
    all_stamp_ = stamp;
    return;
  }
  const uint32_t mask = capacity_ - 1;
  uint32_t i = home(hash);
  while (slots()[i].hash != 0) i = (i + 1) & mask;
  slots()[i] = Slot{hash, stamp};
  ++count_;
}

bool L2Doubts::remove(uint64_t hash, uint64_t since) {
  int64_t found = find(hash);
  if (found < 0) return true;
  if (slots()[found].stamp > since) return false;
  remove_at(static_cast<uint32_t>(found));
  return true;
}

void L2Doubts::remove_at(uint32_t hole) {
  // Later members of the probe run move up into the hole when their home
  // allows, so no lookup stops early at it.
  const uint32_t mask = capacity_ - 1;
  slots()[hole] = Slot{0, 0};
  --count_;
  for (uint32_t j = (hole + 1) & mask; slots()[j].hash != 0; j = (j + 1) & mask) {
    uint32_t h = home(slots()[j].hash);
    // Movable unless its home lies cyclically in (hole, j].
    bool home_after_hole = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
    if (home_after_hole) continue;
    slots()[hole] = slots()[j];
    slots()[j] = Slot{0, 0};
    hole = j;
  }
}

void L2Doubts::clear(uint64_t since) {
  if (all_ && all_stamp_ <= since) all_ = false;
  if (count_ == 0) return;
  // A removal may shift a later slot's entry into this one: looked at again.
  // Entries only ever move into slots already passed when they were passed
  // themselves (a run wrapping past the end), so none is missed.
  for (uint32_t i = 0; i < capacity_;) {
    if (slots()[i].hash != 0 && slots()[i].stamp <= since) {
      remove_at(i);
    } else {
      ++i;
    }
  }
}

}  // namespace npc_scale
