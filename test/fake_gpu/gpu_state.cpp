#include "gpu_state.hpp"

#include <algorithm>
#include <chrono>
#include <random>

namespace npc_scale::fake_gpu {

namespace {

uint64_t startup_entropy() {
  std::random_device rd;
  uint64_t t = static_cast<uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count());
  return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ t;
}

}  // namespace

GpuState::GpuState(const Options& opts)
    : model_{opts.model, opts.profile.max_model_len, opts.priority_scheduling, opts.api_key},
      scheduler_(opts.profile),
      prefix_cache_(opts.prefix_cache_entries),
      faults_(opts.faults),
      roller_(opts.faults.fault_seed),
      healthy_(opts.healthy),
      nonce_base_(startup_entropy()) {
  stats_.model = opts.model;
}

Intake GpuState::intake(int worker, bool chat) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.requests_total;
  if (chat) ++stats_.chat_requests_total;
  Intake in;
  in.id = (next_id_++ << kWorkerBits) | static_cast<uint64_t>(worker);
  in.nonce = nonce_base_ + in.id;
  in.faults = roller_.roll(faults_);
  in.error_status = faults_.error_status;
  in.retry_after = faults_.retry_after;
  in.hang_ms = faults_.hang_ms;
  in.slow_ms = faults_.slow_ms;
  in.ignore_structured_outputs = faults_.ignore_structured_outputs;
  ++stats_.inflight;
  stats_.peak_inflight = std::max(stats_.peak_inflight, stats_.inflight);
  return in;
}

void GpuState::count_faults(const FaultRoll& f) {
  std::lock_guard<std::mutex> lock(mu_);
  auto count = [&](bool hit, FaultKind k) {
    if (hit) ++stats_.faults[static_cast<size_t>(k)];
  };
  count(f.drop, FaultKind::drop);
  count(f.error, FaultKind::error);
  count(f.hang, FaultKind::hang);
  count(f.slow, FaultKind::slow);
  count(f.malformed, FaultKind::malformed);
  count(f.abort, FaultKind::abort);
}

bool GpuState::prefix_lookup(const std::vector<std::string>& prompts) {
  std::lock_guard<std::mutex> lock(mu_);
  bool all = true;
  for (const auto& p : prompts) all = prefix_cache_.lookup_and_insert(p) && all;
  return all;
}

double GpuState::clock(double now_ms) const {
  return (stalled_ ? stalled_since_ms_ : now_ms) - stalled_total_ms_;
}

Progress GpuState::to_wall(Progress p) const {
  if (stalled_) {
    p.next_finish_ms.reset();
  } else if (p.next_finish_ms) {
    *p.next_finish_ms += stalled_total_ms_;
  }
  return p;
}

Progress GpuState::observed(Progress p) {
  for (const Progress::Times& t : p.times) {
    const double queued = t.queued_ms / 1000, prefill = t.prefill_ms / 1000, decode = t.decode_ms / 1000;
    stats_.queue_time.observe(queued);
    stats_.prefill_time.observe(prefill);
    stats_.decode_time.observe(decode);
    stats_.inference_time.observe(prefill + decode);
    stats_.first_token.observe(queued + prefill);
    if (t.tokens > 1) stats_.inter_token.observe(decode / (t.tokens - 1), static_cast<uint64_t>(t.tokens - 1));
  }
  return to_wall(std::move(p));
}

Progress GpuState::submit(const Job& job, double now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  return observed(scheduler_.submit(job, clock(now_ms)));
}

Progress GpuState::advance(double now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  return observed(scheduler_.advance(clock(now_ms)));
}

Progress GpuState::set_stalled(bool stalled, double now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  // What was due by now (nothing more while stalled: its clock stands still);
  // the clock then stops here, or runs on from where it stopped.
  Progress p = scheduler_.advance(clock(now_ms));
  if (stalled && !stalled_) stalled_since_ms_ = now_ms;
  if (!stalled && stalled_) stalled_total_ms_ += now_ms - stalled_since_ms_;
  stalled_ = stalled;
  return observed(std::move(p));
}

bool GpuState::stalled() {
  std::lock_guard<std::mutex> lock(mu_);
  return stalled_;
}

Progress GpuState::take_out(uint64_t id, double now_ms) {
  if (stats_.inflight > 0) --stats_.inflight;
  return observed(scheduler_.cancel(id, clock(now_ms)));
}

Progress GpuState::fail(uint64_t id, double now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  return take_out(id, now_ms);
}

Progress GpuState::cancel(uint64_t id, double now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.client_disconnects;
  return take_out(id, now_ms);
}

void GpuState::succeeded(const InferenceResult& result, double e2e_seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.e2e_latency.observe(e2e_seconds);
  const std::string reason = result.choices.empty() ? "length" : result.choices[0].finish_reason;
  ++(reason == "stop" ? stats_.success_stop : reason == "abort" ? stats_.success_abort : stats_.success_length);
  stats_.prompt_tokens += static_cast<uint64_t>(result.prompt_tokens);
  stats_.generation_tokens += static_cast<uint64_t>(result.completion_tokens);
  if (stats_.inflight > 0) --stats_.inflight;
}

void GpuState::answered() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stats_.inflight > 0) --stats_.inflight;
}

FaultConfig GpuState::faults() {
  std::lock_guard<std::mutex> lock(mu_);
  return faults_;
}

std::optional<std::string> GpuState::update_faults(const nlohmann::json& patch) {
  std::lock_guard<std::mutex> lock(mu_);
  auto err = merge_faults(faults_, patch);
  if (!err && patch.contains("fault_seed")) roller_.reseed(faults_.fault_seed);
  return err;
}

bool GpuState::healthy() {
  std::lock_guard<std::mutex> lock(mu_);
  return healthy_;
}

void GpuState::set_healthy(bool healthy) {
  std::lock_guard<std::mutex> lock(mu_);
  healthy_ = healthy;
}

void GpuState::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  MetricsSnapshot fresh;
  fresh.model = stats_.model;
  fresh.inflight = stats_.inflight;
  fresh.peak_inflight = stats_.inflight;
  stats_ = fresh;
  scheduler_.reset_peak();
  scheduler_.reset_preemptions();
  prefix_cache_.reset_counters();
}

MetricsSnapshot GpuState::snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  MetricsSnapshot s = stats_;
  s.running = scheduler_.running();
  s.waiting = scheduler_.waiting();
  s.peak_running = scheduler_.peak_running();
  s.kv_cache_usage = scheduler_.kv_usage();
  s.preemptions = scheduler_.preemptions();
  s.stalled = stalled_;
  s.prefix_hits = prefix_cache_.hits();
  s.prefix_queries = prefix_cache_.queries();
  return s;
}

}  // namespace npc_scale::fake_gpu
