// Choosing a GPU endpoint for a request. This is the pipeline's interim rule
// (lowest in-flight / max_concurrent among endpoints with a free slot, ties
// rotating); the multi-GPU routing policy builds on the same inputs.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace npc_scale {

struct EndpointLoad {
  int gpu_id = 0;
  int in_flight = 0;
  int max_concurrent = 1;
  bool enabled = true;
};

class Router {
 public:
  // Index into `endpoints` of the chosen one, or nullopt when every enabled
  // endpoint is at its cap (the request must wait: never sent past a cap).
  // `avoid_gpu` is skipped unless it is the only one with room (a retry
  // should land elsewhere when it can).
  std::optional<size_t> pick(const std::vector<EndpointLoad>& endpoints,
                             std::optional<int> avoid_gpu = std::nullopt);

  // Free slots across enabled endpoints.
  static int free_capacity(const std::vector<EndpointLoad>& endpoints);

 private:
  uint64_t rotation_ = 0;  // rotates ties so equal endpoints share work
};

}  // namespace npc_scale
