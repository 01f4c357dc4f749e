// The one simulated GPU shared by all event-loop threads: scheduler, prefix
// cache, fault dice, health flag and counters behind a single mutex. Each call
// is one short critical section, so contention stays negligible at 2 threads.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "faults.hpp"
#include "gpu_model.hpp"
#include "metrics.hpp"
#include "options.hpp"
#include "protocol.hpp"

namespace npc_scale::fake_gpu {

struct Intake {
  uint64_t id;     // low kWorkerBits name the worker that owns the request
  uint64_t nonce;  // sampling nonce for unseeded temperature > 0
  FaultRoll faults;
  // Fault parameters as they were when rolled (admin may change them later).
  int error_status;
  int retry_after;
  int64_t hang_ms;
  int64_t slow_ms;
  bool ignore_structured_outputs;
};

constexpr int kWorkerBits = 8;
inline int owner_of(uint64_t id) { return static_cast<int>(id & ((1u << kWorkerBits) - 1)); }

class GpuState {
 public:
  explicit GpuState(const Options& opts);

  const ServedModel& model() const { return model_; }  // immutable after start

  // Counts an inference request (on /v1/chat/completions when `chat`) as
  // received and in flight, gives it an id and rolls its faults.
  Intake intake(int worker, bool chat = false);
  // Counts the faults of a roll once they are applied (a request rejected
  // with 400 never gets its hang/slow/malformed).
  void count_faults(const FaultRoll& f);
  // Looks each prompt up in the prefix cache; true when all of them hit.
  bool prefix_lookup(const std::vector<std::string>& prompts);

  // The scheduler's calls (gpu_model.hpp), at now_ms on a steady clock.
  Progress submit(const Job& job, double now_ms);
  Progress advance(double now_ms);
  // Client went away: drops the job wherever it is.
  Progress cancel(uint64_t id, double now_ms);
  // Takes a request out of the GPU that is answered with an error (the
  // engine died), not one whose client left.
  Progress fail(uint64_t id, double now_ms);
  // A finished request was answered: counts its tokens and ends its
  // in-flight time, like cancel() and answered(). `e2e_seconds`: from the
  // request's arrival to this answer.
  void succeeded(const InferenceResult& result, double e2e_seconds);
  // The request was answered (or dropped) without reaching the GPU.
  void answered();

  FaultConfig faults();
  std::optional<std::string> update_faults(const nlohmann::json& patch);
  bool healthy();
  void set_healthy(bool healthy);
  // A stalled GPU makes no progress: the scheduler's clock stops, so running
  // requests keep their slots and waiting ones wait, and on resuming it runs
  // on from where it stopped. Tests hold a batch in a known state with it.
  // Returns what finished up to the stall, or since it at resuming.
  Progress set_stalled(bool stalled, double now_ms);
  bool stalled();
  // Zeroes counters; peaks restart from what is in flight right now.
  void reset();
  MetricsSnapshot snapshot();

 private:
  std::mutex mu_;
  ServedModel model_;
  Scheduler scheduler_;
  PrefixCache prefix_cache_;
  FaultConfig faults_;
  FaultRoller roller_;
  bool healthy_;
  bool stalled_ = false;
  double stalled_since_ms_ = 0;
  double stalled_total_ms_ = 0;  // wall time the clock stood still, all stalls
  uint64_t next_id_ = 1;
  uint64_t nonce_base_;
  MetricsSnapshot stats_;  // counters only; gauges are filled in snapshot()

  // Wall time to the scheduler's clock, and its next finish back to wall
  // time (none while stalled: nothing will finish, so no timer is armed).
  double clock(double now_ms) const;
  Progress to_wall(Progress p) const;
  // Counts the finished jobs' Times into the histograms, then to_wall.
  Progress observed(Progress p);
  // A job leaves the GPU unfinished (fail, cancel); mu_ held.
  Progress take_out(uint64_t id, double now_ms);
};

}  // namespace npc_scale::fake_gpu
