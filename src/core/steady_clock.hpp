// The loops' clock for timers and timeouts: monotonic (CLOCK_MONOTONIC,
// shared by every process on the machine), so a wall-clock step (NTP, an
// admin's date) neither delays housekeeping nor fires every timer at once.
// Never stored as a time of day; wall-clock times come from Postgres.
#pragma once

#include <chrono>
#include <cstdint>

namespace npc_scale {

inline int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace npc_scale
