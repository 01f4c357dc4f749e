// Reads vLLM's /metrics (Prometheus text exposition format 0.0.4) for the
// server-side queue: requests our dispatcher does not see (other clients,
// requests vLLM still holds after we timed out) still load the GPU.
#pragma once

#include <optional>
#include <string>

namespace npc_scale {

struct VllmLoad {
  std::optional<double> running;  // sum of vllm:num_requests_running over label sets
  std::optional<double> waiting;  // sum of vllm:num_requests_waiting over label sets
};

// Line by line; ignores comments, other metrics, malformed lines and
// non-finite values. A field stays nullopt when no valid sample was seen.
VllmLoad parse_vllm_load(const std::string& text);

}  // namespace npc_scale
