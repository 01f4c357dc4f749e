// The simulated GPU: timing profiles, a vLLM-like continuous-batching
// scheduler (bounded running set + priority-ordered waiting queue) and a
// prefix cache. Pure logic with no clock: the server turns service times into
// libevent timers, tests drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace npc_scale::fake_gpu {

struct GpuProfile {
  std::string name;
  double base_ms = 0;       // fixed cost per request (prefill, scheduling)
  double per_token_ms = 0;  // decode cost per generated token, batch of one
  int max_batch = 1;        // running-set bound, like vLLM's max_num_seqs
  // Extra per-token time, as a fraction, when the batch is full; scales
  // linearly with the running count (bigger batches decode slower per step).
  double batch_slowdown = 0;
  int max_model_len = 8192;
  // Base-cost multiplier on a prefix-cache hit (the prefill is mostly reused).
  double prefix_hit_factor = 0.5;
};

// "rtx3090ti", "p40" or "instant"; nullopt for anything else.
std::optional<GpuProfile> profile_by_name(std::string_view name);
std::vector<std::string> profile_names();

// Service time of a request admitted when `running` requests (itself
// included) occupy the GPU:
//   base' + tokens * per_token * (1 + slowdown * (running - 1) / max_batch)
// where base' is base_ms, scaled by prefix_hit_factor on a cache hit.
double service_time_ms(const GpuProfile& p, int completion_tokens, int running,
                       bool prefix_hit);

struct Admission {
  uint64_t id;
  double service_ms;  // includes the job's extra_ms (slow fault)
};

struct Job {
  uint64_t id = 0;
  int priority = 0;  // lower runs first, like vLLM's priority scheduling
  int completion_tokens = 1;
  bool prefix_hit = false;
  double extra_ms = 0;
};

class Scheduler {
 public:
  explicit Scheduler(GpuProfile profile) : profile_(std::move(profile)) {}

  // Admits the job if a batch slot is free, otherwise queues it.
  std::optional<Admission> submit(const Job& job);
  // The job finished: frees its slot and admits waiting jobs into it.
  std::vector<Admission> finish(uint64_t id);
  // Aborts a running or waiting job (client went away); returns jobs admitted
  // into a freed slot. Unknown ids are ignored.
  std::vector<Admission> cancel(uint64_t id);

  size_t running() const { return running_.size(); }
  size_t waiting() const { return waiting_.size(); }
  size_t peak_running() const { return peak_running_; }
  // Peak restarts from what is running now: in-flight work is still real.
  void reset_peak() { peak_running_ = running_.size(); }
  const GpuProfile& profile() const { return profile_; }

 private:
  Admission admit(const Job& job);
  std::vector<Admission> fill_slots();

  GpuProfile profile_;
  std::unordered_map<uint64_t, Job> running_;
  // (priority, arrival) keeps FIFO order within one priority.
  std::map<std::pair<int, uint64_t>, Job> waiting_;
  std::unordered_map<uint64_t, std::pair<int, uint64_t>> waiting_keys_;
  uint64_t arrivals_ = 0;
  size_t peak_running_ = 0;
};

// Bounded LRU of hashes of prompt prefixes: a cheap model of vLLM's automatic
// prefix caching, where a repeated system prompt skips most of the prefill.
class PrefixCache {
 public:
  explicit PrefixCache(size_t capacity = 1024, size_t prefix_bytes = 64)
      : capacity_(capacity), prefix_bytes_(prefix_bytes) {}

  // Counts a query; true when the prefix was seen recently. Always records it.
  bool lookup_and_insert(std::string_view prompt);

  uint64_t hits() const { return hits_; }
  uint64_t queries() const { return queries_; }
  size_t size() const { return lru_.size(); }
  void reset_counters() { hits_ = queries_ = 0; }

 private:
  size_t capacity_;
  size_t prefix_bytes_;
  std::list<uint64_t> lru_;  // front = most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> index_;
  uint64_t hits_ = 0;
  uint64_t queries_ = 0;
};

}  // namespace npc_scale::fake_gpu
