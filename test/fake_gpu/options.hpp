// Command-line options of the fake_gpu binary.
#pragma once

#include <optional>
#include <string>

#include "faults.hpp"
#include "gpu_model.hpp"

namespace npc_scale::fake_gpu {

struct Options {
  std::string host = "127.0.0.1";
  int port = 8000;  // vLLM's default; 0 picks a free port
  std::string model = "npc-llm";
  GpuProfile profile;  // rtx3090ti unless --profile says otherwise
  FaultConfig faults;
  bool healthy = true;
  int threads = 1;  // event loops sharing the port via SO_REUSEPORT
  size_t prefix_cache_entries = 1024;
  bool priority_scheduling = false;  // --scheduling-policy priority (vLLM's default: fcfs)
  std::string api_key;               // --api-key, as vLLM's
  std::string pid_file;              // --pid-file: our pid, once listening; removed at exit
  int keep_alive_ms = 5000;          // an idle connection is closed after this (uvicorn's 5 s)
  bool help = false;
};

// Parses argv; profile overrides (--base-ms, ...) apply on top of --profile
// whatever their order. Returns an error message on bad input.
std::optional<std::string> parse_options(int argc, const char* const* argv, Options* out);

std::string usage_text();

}  // namespace npc_scale::fake_gpu
