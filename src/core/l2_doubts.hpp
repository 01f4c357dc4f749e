// Keys whose copy in L2 (Redis) may be older than what L1 and L3 hold: a
// cache write that reached L1 at COMMIT but not Redis (down, or this process
// backing off from it), or a delete Redis did not confirm at COMMIT. A reader
// that finds such a key in Redis does not serve it: it deletes it there (the
// key is then trusted again) and reads on from L3.
//
// The set lives in shared memory, so it is plain data over a region the
// caller provides and locks: 64-bit key hashes in a fixed open-addressing
// table (a collision only costs another key an L2 miss). When the table is
// full, every L2 hit is doubted until Redis has been emptied (a clear).
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

  // Doubts a key; beyond 3/4 of the slots, every key (all()).
  void add(uint64_t hash);
  // A clear that may not have reached Redis: every key is doubted.
  void add_all();
  enum class Doubt { none, key, all };
  Doubt check(uint64_t hash) const;
  bool doubted(uint64_t hash) const { return check(hash) != Doubt::none; }
  // The key's L2 copy is gone (a confirmed DEL): trusted again.
  void remove(uint64_t hash);
  // Moves on with every add: noted before a clear of Redis starts.
  uint64_t stamp() const { return adds_; }
  // Redis was emptied by a clear that started at `since` (a stamp()):
  // nothing left to doubt, unless a doubt came in meanwhile (its key's old
  // value may have been written after the clear passed it). True if cleared.
  bool clear(uint64_t since);
  uint32_t size() const { return count_; }
  bool all() const { return all_; }

 private:
  L2Doubts() = default;
  uint64_t* slots() { return reinterpret_cast<uint64_t*>(this + 1); }
  const uint64_t* slots() const { return reinterpret_cast<const uint64_t*>(this + 1); }
  uint32_t home(uint64_t h) const { return static_cast<uint32_t>(h) & (capacity_ - 1); }
  int64_t find(uint64_t hash) const;  // slot index, -1 if absent

  void reset();

  uint32_t capacity_;
  uint32_t count_;
  bool all_;
  uint64_t adds_;
  // Followed by capacity_ slots; 0 marks an empty one (hashes are never 0).
};

}  // namespace npc_scale
