#include "gpu_model.hpp"

#include <xxhash.h>

#include <algorithm>

namespace npc_scale::fake_gpu {

namespace {

// Rough figures for a ~7-8B model in fp16/int8 under vLLM. The 3090 Ti
// (Ampere, 1 TB/s) decodes ~2.5x faster than the P40 (Pascal, 350 GB/s, no
// tensor cores), prefills ~5x faster (tensor cores) and fits a larger batch
// in its KV cache. KV cache: 24 GB each, less the weights and activations,
// at ~128 KiB per token (an 8B model with grouped-query attention, fp16):
// room for 14 full-length requests on the 3090 Ti and 12 on the P40, and
// for far more of the short prompts NPCs send.
const GpuProfile kProfiles[] = {
    {"rtx3090ti", 15.0, 1.5, 64, 0.5, 8192, 0.5, 0.02, 114688},
    {"p40", 30.0, 4.0, 32, 0.8, 4096, 0.5, 0.1, 49152},
    // No simulated time at all: the server answers inside the request
    // callback, which makes it a throughput stress target for clients.
    {"instant", 0.0, 0.0, 1000000, 0.0, 32768, 0.5, 0.0, 0},
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

double prefill_ms(const GpuProfile& p, bool prefix_hit, int64_t tokens) {
  const double ms = p.base_ms + p.prefill_per_token_ms * static_cast<double>(std::max<int64_t>(0, tokens));
  return prefix_hit ? ms * p.prefix_hit_factor : ms;
}

double step_ms(const GpuProfile& p, int running) {
  double others = std::max(0, running - 1);
  return p.per_token_ms * (1.0 + p.batch_slowdown * others / std::max(1, p.max_batch));
}

namespace {
// Finishing times are sums of doubles: "done" allows for their rounding.
constexpr double kDoneEpsilonMs = 1e-6;
// Likewise for tokens left, when a first token is due.
constexpr double kTokenEpsilon = 1e-6;

double generated(const Job& job, double tokens_left) {
  return std::max(0.0, static_cast<double>(job.completion_tokens) - tokens_left);
}

// KV-cache tokens a job holds (or needs, to be admitted) with `tokens_left`.
double kv_tokens(const Job& job, double tokens_left) {
  return std::max(0, job.prompt_tokens) + std::max(1, job.sequences) * generated(job, tokens_left);
}
}  // namespace

int Scheduler::prompt_sharers() const {
  int n = 0;
  for (const Running& r : running_) n += prefilling_prompt(r) ? 1 : 0;
  return n;
}

double Scheduler::left_ms(const Running& r, double step, int sharers) const {
  // One more sharer for a job still in its fixed cost: an estimate, used
  // only to tell whether it finishes at the coming event (it cannot).
  const int share = std::max(1, prefilling_prompt(r) ? sharers : sharers + 1);
  return r.fixed_left_ms + r.prompt_left_ms * share + r.tokens_left * step;
}

double Scheduler::stage_left_ms(const Running& r, double step, int sharers) const {
  if (r.fixed_left_ms > 0) return r.fixed_left_ms;
  if (r.prompt_left_ms > 0) return r.prompt_left_ms * std::max(1, sharers);
  return r.tokens_left * step;
}

double Scheduler::kv_of(const Running& r) const { return kv_tokens(r.job, r.tokens_left); }

double Scheduler::kv_used() const {
  double used = 0;
  for (const Running& r : running_) used += kv_of(r);
  return used;
}

double Scheduler::kv_usage() const {
  if (!kv_limited()) return 0;
  return std::min(1.0, kv_used() / static_cast<double>(profile_.kv_cache_tokens));
}

std::optional<Scheduler::NextEvent> Scheduler::next_event() const {
  if (running_.empty()) return std::nullopt;
  const double step = step_ms(profile_, static_cast<int>(running_.size()));
  const int sharers = prompt_sharers();
  int with_prompt = 0;  // jobs with prompt prefill still to do, at either stage
  for (const Running& r : running_) with_prompt += r.prompt_left_ms > 0 ? 1 : 0;
  NextEvent ev{left_ms(running_.front(), step, sharers), false};
  for (const Running& r : running_) {
    ev.in_ms = std::min(ev.in_ms, left_ms(r, step, sharers));
    // A stage's end that may change how the prompt prefill is shared: a job
    // joining others at it (or others joining it later), or leaving others.
    const bool joins = r.fixed_left_ms > 0 && r.prompt_left_ms > 0 && with_prompt > 1;
    const bool leaves = prefilling_prompt(r) && sharers > 1;
    if (joins || leaves) ev.in_ms = std::min(ev.in_ms, stage_left_ms(r, step, sharers));
  }
  // One job alone is never preempted (a request longer than the cache runs
  // by itself), so the cache only matters with two or more.
  if (!kv_limited() || running_.size() < 2) return ev;
  double growth = 0;  // KV tokens per ms, while no job's phase changes
  for (const Running& r : running_) {
    if (r.fixed_left_ms > 0 || r.prompt_left_ms > 0) {
      // It starts growing at its prefill's end.
      const int share = std::max(1, prefilling_prompt(r) ? sharers : sharers + 1);
      ev.in_ms = std::min(ev.in_ms, r.fixed_left_ms + r.prompt_left_ms * share);
    } else if (r.tokens_left > 0 && step > 0) {
      growth += std::max(1, r.job.sequences) / step;
    }
  }
  if (growth > 0) {
    const double full_in = std::max(0.0, (profile_.kv_cache_tokens - kv_used()) / growth);
    if (full_in <= ev.in_ms) ev = NextEvent{full_in, true};
  }
  return ev;
}

void Scheduler::progress_to(double t) {
  const double dt = t - clock_ms_;
  if (dt <= 0) return;
  const double step = step_ms(profile_, static_cast<int>(running_.size()));
  // The sharing as it is at the start: events come at every stage's end, so
  // it holds over dt (but for rounding at its end).
  const int share = std::max(1, prompt_sharers());
  for (Running& r : running_) {
    double rest = dt;
    const double fixed = std::min(rest, r.fixed_left_ms);
    r.fixed_left_ms -= fixed;
    rest -= fixed;
    if (rest <= 0) continue;
    const double prompt = std::min(rest, r.prompt_left_ms * share);
    r.prompt_left_ms = std::max(0.0, r.prompt_left_ms - prompt / share);
    rest -= prompt;
    if (rest <= 0) continue;
    const double before = r.tokens_left;
    r.tokens_left = step > 0 ? std::max(0.0, r.tokens_left - rest / step) : 0;
    // The first token comes out of the first decode step.
    const double first_at = static_cast<double>(std::max(1, r.job.completion_tokens) - 1);
    if (r.stamps.first_token_ms < 0 && r.tokens_left <= first_at + kTokenEpsilon) {
      const double decode_from = t - rest;
      r.stamps.first_token_ms = decode_from + std::max(0.0, before - first_at) * step;
    }
  }
  clock_ms_ = t;
}

Progress::Times Scheduler::times_of(const Running& r) const {
  const Stamps& st = r.stamps;
  const double submitted = st.submitted_ms < 0 ? clock_ms_ : st.submitted_ms;
  const double admitted = st.admitted_ms < 0 ? clock_ms_ : st.admitted_ms;
  const double first = st.first_token_ms < 0 ? clock_ms_ : st.first_token_ms;
  Progress::Times t;
  t.queued_ms = std::max(0.0, admitted - submitted);
  t.prefill_ms = std::max(0.0, first - admitted);
  t.decode_ms = std::max(0.0, clock_ms_ - first);
  t.tokens = std::max(1, r.job.completion_tokens);
  return t;
}

void Scheduler::run_until(double now_ms, std::vector<uint64_t>* finished, std::vector<Progress::Times>* times) {
  // Callers on other threads read their clocks before taking the lock: a
  // time slightly behind the scheduler's is "now".
  if (!clock_started_) {
    clock_ms_ = now_ms;
    clock_started_ = true;
  }
  while (auto ev = next_event()) {
    if (clock_ms_ + ev->in_ms > now_ms + kDoneEpsilonMs) break;
    const double step = step_ms(profile_, static_cast<int>(running_.size()));
    const int sharers = prompt_sharers();
    // What this event is, decided before the clock moves there, whatever
    // rounding leaves of the work afterwards (at a large clock the step
    // between doubles exceeds any fixed epsilon, and "done" judged
    // afterwards could loop for ever): the jobs with the least left finish,
    // the stages due end, a full cache preempts.
    const double soonest = ev->in_ms;
    std::vector<bool> finishing, fixed_done, prompt_done;
    for (const Running& r : running_) {
      finishing.push_back(left_ms(r, step, sharers) <= soonest + kDoneEpsilonMs);
      fixed_done.push_back(r.fixed_left_ms <= soonest + kDoneEpsilonMs);
      prompt_done.push_back(fixed_done.back() &&
                            (r.fixed_left_ms > 0 ? r.prompt_left_ms <= 0
                                                 : r.prompt_left_ms * std::max(1, sharers) <= soonest + kDoneEpsilonMs));
    }
    progress_to(clock_ms_ + soonest);
    size_t kept = 0;
    for (size_t i = 0; i < running_.size(); i++) {
      if (finishing[i]) {
        finished->push_back(running_[i].job.id);
        times->push_back(times_of(running_[i]));
      } else {
        if (fixed_done[i]) running_[i].fixed_left_ms = 0;
        if (prompt_done[i]) running_[i].prompt_left_ms = 0;
        running_[kept++] = std::move(running_[i]);
      }
    }
    const bool any_finished = kept < running_.size();
    running_.resize(kept);
    if (ev->kv_full) {
      // The next decode step finds no free block: the newest goes back to
      // waiting, as many as it takes (at least one, unless a finish made room).
      const double full = static_cast<double>(profile_.kv_cache_tokens) * (1 - 1e-9);
      bool must = !any_finished;
      while (running_.size() > 1 && (must || kv_used() >= full)) {
        preempt_newest();
        must = false;
      }
    }
    fill_slots();
  }
  progress_to(now_ms);
}

void Scheduler::admit(const Job& job, uint64_t arrival, double tokens_left, Stamps stamps) {
  // A preempted job prefills its prompt and its tokens so far again.
  const double prefill_tokens = kv_tokens(job, tokens_left);
  const double whole = prefill_ms(profile_, job.prefix_hit, static_cast<int64_t>(prefill_tokens));
  const double fixed = prefill_ms(profile_, job.prefix_hit, 0);
  if (stamps.admitted_ms < 0) stamps.admitted_ms = clock_ms_;
  running_.push_back(Running{job, arrival, stamps, fixed + job.extra_ms, whole - fixed, tokens_left});
  peak_running_ = std::max(peak_running_, running_.size());
}

void Scheduler::enqueue(const Job& job, uint64_t arrival, double tokens_left, Stamps stamps) {
  auto key = std::make_pair(job.priority, arrival);
  waiting_.emplace(key, Waiting{job, tokens_left, stamps});
  waiting_keys_.emplace(job.id, key);
}

void Scheduler::fill_slots() {
  while (!waiting_.empty() &&
         running_.size() < static_cast<size_t>(std::max(1, profile_.max_batch))) {
    auto it = waiting_.begin();
    const Waiting& w = it->second;
    // Room for what it holds and its next token; an empty GPU takes any job.
    if (kv_limited() && !running_.empty() &&
        kv_used() + kv_tokens(w.job, w.tokens_left) + std::max(1, w.job.sequences) >
            static_cast<double>(profile_.kv_cache_tokens)) {
      break;
    }
    const Job job = w.job;
    const double tokens_left = w.tokens_left;
    const Stamps stamps = w.stamps;
    const uint64_t arrival = it->first.second;
    waiting_keys_.erase(job.id);
    waiting_.erase(it);
    admit(job, arrival, tokens_left, stamps);
  }
}

void Scheduler::preempt_newest() {
  // vLLM evicts the last request it scheduled (fcfs), or the lowest-priority
  // latest one (priority): with one priority the same.
  auto victim = std::max_element(running_.begin(), running_.end(), [](const Running& a, const Running& b) {
    return std::make_pair(a.job.priority, a.arrival) < std::make_pair(b.job.priority, b.arrival);
  });
  Job job = victim->job;
  job.extra_ms = 0;  // the slow fault delayed it once
  const uint64_t arrival = victim->arrival;
  const double tokens_left = victim->tokens_left;
  const Stamps stamps = victim->stamps;
  running_.erase(victim);
  ++preemptions_;
  enqueue(job, arrival, tokens_left, stamps);
}

Progress Scheduler::report(std::vector<uint64_t> finished, std::vector<Progress::Times> times) const {
  auto ev = next_event();
  Progress p;
  p.finished = std::move(finished);
  p.times = std::move(times);
  if (ev) p.next_finish_ms = clock_ms_ + ev->in_ms;
  return p;
}

Progress Scheduler::submit(const Job& job, double now_ms) {
  std::vector<uint64_t> finished;
  std::vector<Progress::Times> times;
  run_until(now_ms, &finished, &times);
  // Into the waiting queue, admitted at once if it is its turn and there is
  // room (vLLM's scheduler stops at the first waiting request that does not
  // fit, so a newcomer never overtakes it).
  Stamps stamps;
  stamps.submitted_ms = clock_ms_;
  enqueue(job, arrivals_++, static_cast<double>(std::max(0, job.completion_tokens)), stamps);
  fill_slots();
  run_until(now_ms, &finished, &times);  // no work at all: done now
  return report(std::move(finished), std::move(times));
}

Progress Scheduler::advance(double now_ms) {
  std::vector<uint64_t> finished;
  std::vector<Progress::Times> times;
  run_until(now_ms, &finished, &times);
  return report(std::move(finished), std::move(times));
}

Progress Scheduler::cancel(uint64_t id, double now_ms) {
  std::vector<uint64_t> finished;
  std::vector<Progress::Times> times;
  run_until(now_ms, &finished, &times);
  auto wk = waiting_keys_.find(id);
  if (wk != waiting_keys_.end()) {
    waiting_.erase(wk->second);
    waiting_keys_.erase(wk);
  } else {
    auto it = std::find_if(running_.begin(), running_.end(),
                           [&](const Running& r) { return r.job.id == id; });
    if (it != running_.end()) running_.erase(it);
  }
  // A freed slot or KV, or a head of the queue that held the rest back.
  fill_slots();
  run_until(now_ms, &finished, &times);
  return report(std::move(finished), std::move(times));
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
