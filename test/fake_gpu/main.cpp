// fake_gpu: a simulated vLLM GPU server for tests and benchmarks.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>

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
  // Written once we listen, by rename (a reader never sees it half
  // written): a script that started us detached learns our pid from it.
  if (!opts.pid_file.empty()) {
    const std::string tmp = opts.pid_file + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f || std::fprintf(f, "%ld\n", static_cast<long>(getpid())) < 0 || std::fclose(f) != 0 ||
        std::rename(tmp.c_str(), opts.pid_file.c_str()) != 0) {
      std::fprintf(stderr, "fake_gpu: cannot write the pid file %s\n", opts.pid_file.c_str());
      return 1;
    }
  }
  // First stdout line is the contract with whoever spawned us (--port 0).
  std::printf("listening %s:%d\n", opts.host.c_str(), server.port());
  std::fflush(stdout);
  server.run();
  if (!opts.pid_file.empty()) std::remove(opts.pid_file.c_str());
  return 0;
}
