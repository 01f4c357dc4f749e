// Prometheus text exposition with vLLM's metric names, so scrapers and
// autoscalers written against a real vLLM work unchanged.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace npc_scale::fake_gpu {

enum class FaultKind { error, hang, slow, malformed, drop, abort };

// vLLM's histogram bucket bounds (upper, s; vllm/v1/metrics/loggers.py):
// e2e latency and the request's phases (queue, prefill, decode, inference) ...
inline constexpr std::array<double, 21> kRequestLatencyBuckets = {
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
// ... time to first token ...
inline constexpr std::array<double, 22> kFirstTokenBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
// ... and the time between two output tokens.
inline constexpr std::array<double, 19> kInterTokenBuckets = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
constexpr size_t kFaultKinds = 6;
const char* fault_kind_name(FaultKind k);

// A Prometheus histogram: counts per bucket (not cumulative; the last is
// above every bound), their sum and count.
struct Histogram {
  template <size_t N>
  explicit Histogram(const std::array<double, N>& b) : bounds(b.data()), bound_count(N), counts(N + 1) {}
  // `times` observations of `value` (bounds are inclusive).
  void observe(double value, uint64_t times = 1);

  const double* bounds;  // one of the arrays above
  size_t bound_count;
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count = 0;
};

struct MetricsSnapshot {
  std::string model;
  uint64_t running = 0;   // in the GPU batch
  uint64_t waiting = 0;   // queued behind a full batch or KV cache
  double kv_cache_usage = 0;  // fraction of the KV cache held (0 = unlimited)
  uint64_t preemptions = 0;   // running requests evicted by a full KV cache
  uint64_t inflight = 0;  // accepted, not answered yet (incl. hangs)
  bool stalled = false;   // POST /admin/stall
  uint64_t requests_total = 0;
  uint64_t chat_requests_total = 0;  // of those, on /v1/chat/completions
  uint64_t success_stop = 0;    // by finish_reason of the first choice
  uint64_t success_length = 0;
  uint64_t success_abort = 0;
  uint64_t prompt_tokens = 0;
  uint64_t generation_tokens = 0;
  uint64_t peak_running = 0;
  uint64_t peak_inflight = 0;
  std::array<uint64_t, kFaultKinds> faults{};
  uint64_t prefix_hits = 0;
  uint64_t prefix_queries = 0;
  uint64_t client_disconnects = 0;
  // Answered inference requests, arrival to answer (vLLM's e2e latency).
  Histogram e2e_latency{kRequestLatencyBuckets};
  // Requests the simulated GPU finished, by phase (Scheduler's Times): the
  // waiting queue, prefill (to the first token), decode, and the last two
  // together; time to first token (queue + prefill); and each interval
  // between two tokens (a request's mean interval, once per interval).
  Histogram queue_time{kRequestLatencyBuckets};
  Histogram prefill_time{kRequestLatencyBuckets};
  Histogram decode_time{kRequestLatencyBuckets};
  Histogram inference_time{kRequestLatencyBuckets};
  Histogram first_token{kFirstTokenBuckets};
  Histogram inter_token{kInterTokenBuckets};
};

std::string render_metrics(const MetricsSnapshot& s);

}  // namespace npc_scale::fake_gpu
