// HTTP glue: libevent evhttp loops in front of the shared GpuState.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gpu_state.hpp"
#include "options.hpp"

namespace npc_scale::fake_gpu {

class Worker;

class Server {
 public:
  explicit Server(Options opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening sockets (one per thread, SO_REUSEPORT) and sets up
  // the loops; port() is valid afterwards.
  std::optional<std::string> start();
  int port() const { return port_; }
  // Serves until SIGINT/SIGTERM, then returns; worker 0 runs on this thread.
  void run();

 private:
  Options opts_;
  GpuState gpu_;
  std::vector<std::unique_ptr<Worker>> workers_;
  int port_ = 0;
};

}  // namespace npc_scale::fake_gpu
