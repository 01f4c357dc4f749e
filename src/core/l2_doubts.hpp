// Keys whose copy in L2 (Redis) may be older than what L1 and L3 hold: a
// cache write that reached L1 at COMMIT but not Redis (down, or this process
// backing off from it), or a delete Redis did not confirm at COMMIT. A reader
// that finds such a key doubted does not serve Redis's copy: it deletes it
// there (the key is then trusted again) and reads on from L3.
//
// The set lives in shared memory, so it is plain data over a region the
// caller provides and locks: 64-bit key hashes in a fixed open-addressing
// table (a collision only costs another key an L2 miss), each with the stamp
// of its last doubt. When the table is full, every key is doubted until
// Redis has been emptied (a clear).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace npc_scale {

class L2Doubts {
 public:
  // Bytes to reserve for a set of `slots` (a power of two, >= 8).
  static size_t bytes_for(uint32_t slots);
  // Starts an empty set in `mem` (bytes_for(slots) bytes, 8-byte aligned).
  static L2Doubts* init(void* mem, uint32_t slots);
  // The set another process started in `mem`.
  static L2Doubts* attach(void* mem) { return static_cast<L2Doubts*>(mem); }

  static uint64_t hash(std::string_view key);

  // Doubts a key (again: its stamp moves on); beyond 3/4 of the slots,
  // every key (all()).
  void add(uint64_t hash);
  // A clear that may not have reached Redis: every key is doubted.
  void add_all();
  enum class Doubt { none, key, all };
  Doubt check(uint64_t hash) const;
  bool doubted(uint64_t hash) const { return check(hash) != Doubt::none; }

  // Moves on with every add: noted before a DEL or a clear is sent to Redis.
  uint64_t stamp() const { return adds_; }
  // Redis confirmed the key's DEL, sent at `since` (a stamp()): trusted
  // again, unless doubted anew since (its SET may have been lost after the
  // DEL). True if it is no longer doubted on its own.
  bool remove(uint64_t hash, uint64_t since);
  // Redis confirmed a clear sent at `since`: every doubt up to then is
  // lifted; later ones stay (their older value may have been written after
  // the clear passed it), and so does all() if it was set later.
  void clear(uint64_t since);

  uint32_t size() const { return count_; }
  bool all() const { return all_; }

 private:
  struct Slot {
    uint64_t hash;   // 0: empty (hashes are never 0)
    uint64_t stamp;  // the adds_ of its last doubt
  };
  L2Doubts() = default;
  Slot* slots() { return reinterpret_cast<Slot*>(this + 1); }
  const Slot* slots() const { return reinterpret_cast<const Slot*>(this + 1); }
  uint32_t home(uint64_t h) const { return static_cast<uint32_t>(h) & (capacity_ - 1); }
  int64_t find(uint64_t hash) const;  // slot index, -1 if absent
  void remove_at(uint32_t index);     // backward-shift deletion

  uint32_t capacity_;
  uint32_t count_;
  bool all_;
  uint64_t all_stamp_;  // the adds_ when all_ was last set
  uint64_t adds_;
  // Followed by capacity_ Slots.
};

}  // namespace npc_scale
