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

double prefill_ms(const GpuProfile& p, bool prefix_hit) {
  return prefix_hit ? p.base_ms * p.prefix_hit_factor : p.base_ms;
}

double step_ms(const GpuProfile& p, int running) {
  double others = std::max(0, running - 1);
  return p.per_token_ms * (1.0 + p.batch_slowdown * others / std::max(1, p.max_batch));
}

namespace {
// Finishing times are sums of doubles: "done" allows for their rounding.
constexpr double kDoneEpsilonMs = 1e-6;
}  // namespace

double Scheduler::left_ms(const Running& r, double step) const {
  return r.prefill_left_ms + r.tokens_left * step;
}

std::optional<double> Scheduler::next_finish() const {
  if (running_.empty()) return std::nullopt;
  const double step = step_ms(profile_, static_cast<int>(running_.size()));
  double soonest = left_ms(running_.front(), step);
  for (const Running& r : running_) soonest = std::min(soonest, left_ms(r, step));
  return clock_ms_ + soonest;
}

void Scheduler::progress_to(double t) {
  const double dt = t - clock_ms_;
  if (dt <= 0) return;
  const double step = step_ms(profile_, static_cast<int>(running_.size()));
  for (Running& r : running_) {
    const double prefill = std::min(dt, r.prefill_left_ms);
    r.prefill_left_ms -= prefill;
    const double decoding = dt - prefill;
    if (decoding > 0) r.tokens_left = step > 0 ? std::max(0.0, r.tokens_left - decoding / step) : 0;
  }
  clock_ms_ = t;
}

void Scheduler::run_until(double now_ms, std::vector<uint64_t>* finished) {
  // Callers on other threads read their clocks before taking the lock: a
  // time slightly behind the scheduler's is "now".
  if (!clock_started_) {
    clock_ms_ = now_ms;
    clock_started_ = true;
  }
  while (!running_.empty()) {
    const double step = step_ms(profile_, static_cast<int>(running_.size()));
    double soonest = left_ms(running_.front(), step);
    for (const Running& r : running_) soonest = std::min(soonest, left_ms(r, step));
    if (clock_ms_ + soonest > now_ms + kDoneEpsilonMs) break;
    // The jobs with the least left finish at this instant, whatever
    // rounding leaves of their work once the clock has moved there (at a
    // large clock the step between doubles exceeds any fixed epsilon, and
    // "done" judged afterwards could loop for ever): chosen before.
    auto done = [&](const Running& r) { return left_ms(r, step) <= soonest + kDoneEpsilonMs; };
    std::vector<bool> finishing;
    for (const Running& r : running_) finishing.push_back(done(r));
    progress_to(clock_ms_ + soonest);
    size_t kept = 0;
    for (size_t i = 0; i < running_.size(); i++) {
      if (finishing[i]) {
        finished->push_back(running_[i].job.id);
      } else {
        running_[kept++] = std::move(running_[i]);
      }
    }
    running_.resize(kept);
    fill_slots();
  }
  progress_to(now_ms);
}

void Scheduler::admit(const Job& job) {
  running_.push_back(Running{job, prefill_ms(profile_, job.prefix_hit) + job.extra_ms,
                             static_cast<double>(std::max(0, job.completion_tokens))});
  peak_running_ = std::max(peak_running_, running_.size());
}

void Scheduler::fill_slots() {
  while (!waiting_.empty() &&
         running_.size() < static_cast<size_t>(std::max(1, profile_.max_batch))) {
    auto it = waiting_.begin();
    Job job = it->second;
    waiting_keys_.erase(job.id);
    waiting_.erase(it);
    admit(job);
  }
}

Progress Scheduler::report(std::vector<uint64_t> finished) const {
  return Progress{std::move(finished), next_finish()};
}

Progress Scheduler::submit(const Job& job, double now_ms) {
  std::vector<uint64_t> finished;
  run_until(now_ms, &finished);
  if (running_.size() < static_cast<size_t>(std::max(1, profile_.max_batch))) {
    admit(job);
    run_until(now_ms, &finished);  // no work at all: done now
  } else {
    auto key = std::make_pair(job.priority, arrivals_++);
    waiting_.emplace(key, job);
    waiting_keys_.emplace(job.id, key);
  }
  return report(std::move(finished));
}

Progress Scheduler::advance(double now_ms) {
  std::vector<uint64_t> finished;
  run_until(now_ms, &finished);
  return report(std::move(finished));
}

Progress Scheduler::cancel(uint64_t id, double now_ms) {
  std::vector<uint64_t> finished;
  run_until(now_ms, &finished);
  auto wk = waiting_keys_.find(id);
  if (wk != waiting_keys_.end()) {
    waiting_.erase(wk->second);
    waiting_keys_.erase(wk);
  } else {
    auto it = std::find_if(running_.begin(), running_.end(),
                           [&](const Running& r) { return r.job.id == id; });
    if (it != running_.end()) {
      running_.erase(it);
      fill_slots();
      run_until(now_ms, &finished);
    }
  }
  return report(std::move(finished));
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
