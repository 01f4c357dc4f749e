// Prometheus text exposition with vLLM's metric names, so scrapers and
// autoscalers written against a real vLLM work unchanged.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace npc_scale::fake_gpu {

enum class FaultKind { error, hang, slow, malformed, drop, abort };

// vLLM's buckets for vllm:e2e_request_latency_seconds (upper bounds, s).
constexpr std::array<double, 15> kE2eLatencyBuckets = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0,
                                                       10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0};
constexpr size_t kFaultKinds = 6;
const char* fault_kind_name(FaultKind k);

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
  // Answered inference requests, arrival to answer (vLLM's e2e latency):
  // per bucket of kE2eLatencyBuckets (not cumulative), then the rest.
  std::array<uint64_t, kE2eLatencyBuckets.size() + 1> e2e_latency_buckets{};
  double e2e_latency_sum_s = 0;
  uint64_t e2e_latency_count = 0;
};

// Counts one answered request's arrival-to-answer time into `s`.
void observe_e2e_latency(MetricsSnapshot& s, double seconds);

std::string render_metrics(const MetricsSnapshot& s);

}  // namespace npc_scale::fake_gpu
