#include "gpu_model.hpp"

#include <xxhash.h>

#include <algorithm>

namespace npc_scale::fake_gpu {

namespace {

// Rough figures for a ~7-8B model in fp16/int8 under vLLM. The 3090 Ti
// (Ampere, 1 TB/s) decodes ~2.5x faster than the P40 (Pascal, 350 GB/s, no
// tensor cores) and fits a larger batch in its KV cache.
const GpuProfile kProfiles[] = {
    {"rtx3090ti", 15.0, 1.5, 64, 0.5, 8192, 0.5},
    {"p40", 30.0, 4.0, 32, 0.8, 4096, 0.5},
    // No simulated time at all: the server answers inside the request
    // callback, which makes it a throughput stress target for clients.
    {"instant", 0.0, 0.0, 1000000, 0.0, 32768, 0.5},
};

}  // namespace

std::optional<GpuProfile> profile_by_name(std::string_view name) {
  for (const auto& p : kProfiles) {
    if (p.name == name) return p;
  }
  return std::nullopt;
}

std::vector<std::string> profile_names() {
  std::vector<std::string> names;
  for (const auto& p : kProfiles) names.push_back(p.name);
  return names;
}

double service_time_ms(const GpuProfile& p, int completion_tokens, int running,
                       bool prefix_hit) {
  double base = prefix_hit ? p.base_ms * p.prefix_hit_factor : p.base_ms;
  double others = std::max(0, running - 1);
  double slowdown =
      1.0 + p.batch_slowdown * others / std::max(1, p.max_batch);
  return base + completion_tokens * p.per_token_ms * slowdown;
}

Admission Scheduler::admit(const Job& job) {
  running_.emplace(job.id, job);
  peak_running_ = std::max(peak_running_, running_.size());
  double ms = service_time_ms(profile_, job.completion_tokens,
                              static_cast<int>(running_.size()),
                              job.prefix_hit) +
              job.extra_ms;
  return {job.id, ms};
}

std::optional<Admission> Scheduler::submit(const Job& job) {
  if (running_.size() < static_cast<size_t>(std::max(1, profile_.max_batch))) {
    return admit(job);
  }
  auto key = std::make_pair(job.priority, arrivals_++);
  waiting_.emplace(key, job);
  waiting_keys_.emplace(job.id, key);
  return std::nullopt;
}

std::vector<Admission> Scheduler::fill_slots() {
  std::vector<Admission> out;
  while (!waiting_.empty() &&
         running_.size() < static_cast<size_t>(std::max(1, profile_.max_batch))) {
    auto it = waiting_.begin();
    Job job = it->second;
    waiting_keys_.erase(job.id);
    waiting_.erase(it);
    out.push_back(admit(job));
  }
  return out;
}

std::vector<Admission> Scheduler::finish(uint64_t id) {
  running_.erase(id);
  return fill_slots();
}

std::vector<Admission> Scheduler::cancel(uint64_t id) {
  auto wk = waiting_keys_.find(id);
  if (wk != waiting_keys_.end()) {
    waiting_.erase(wk->second);
    waiting_keys_.erase(wk);
    return {};
  }
  if (running_.erase(id) == 0) return {};
  return fill_slots();
}

bool PrefixCache::lookup_and_insert(std::string_view prompt) {
  ++queries_;
  size_t len = std::min(prompt.size(), prefix_bytes_);
  uint64_t h = XXH3_64bits(prompt.data(), len);
  auto it = index_.find(h);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    ++hits_;
    return true;
  }
  if (capacity_ == 0) return false;
  if (lru_.size() >= capacity_) {
    index_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(h);
  index_.emplace(h, lru_.begin());
  return false;
}

}  // namespace npc_scale::fake_gpu
