// fake_gpu: a simulated vLLM GPU server for tests and benchmarks.
#include <csignal>
#include <cstdio>

#include "options.hpp"
#include "server.hpp"

int main(int argc, char** argv) {
  using namespace npc_scale::fake_gpu;
  Options opts;
  if (auto err = parse_options(argc, argv, &opts)) {
    std::fprintf(stderr, "fake_gpu: %s\n%s", err->c_str(), usage_text().c_str());
    return 2;
  }
  if (opts.help) {
    std::fputs(usage_text().c_str(), stdout);
    return 0;
  }
  // Writing to a socket the client already closed must be an error, not death.
  std::signal(SIGPIPE, SIG_IGN);

  Server server(opts);
  if (auto err = server.start()) {
    std::fprintf(stderr, "fake_gpu: %s\n", err->c_str());
    return 1;
  }
  // First stdout line is the contract with whoever spawned us (--port 0).
  std::printf("listening %s:%d\n", opts.host.c_str(), server.port());
  std::fflush(stdout);
  server.run();
  return 0;
}
