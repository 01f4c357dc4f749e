// Test helpers: the fake_gpu binary ($FAKE_GPU_BIN, default build/fake_gpu)
// spawned on a free loopback port, and a blocking libcurl client for it.
// Waits are deadline-bounded polls on observable state, never fixed sleeps.
#pragma once

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

extern char** environ;

namespace fake_gpu_test {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto kDeadline = std::chrono::seconds(20);

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::optional<std::string> retry_after;
  json parsed() const { return json::parse(body); }
};

inline size_t append_body(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

inline Reply http(const std::string& url, const std::optional<std::string>& post_body = std::nullopt,
           long timeout_ms = 5000, const std::string& extra_header = "") {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  Reply r;
  CURL* c = curl_easy_init();
  // A Content-Type of the test's own replaces the usual one.
  const bool own_type = strncasecmp(extra_header.c_str(), "Content-Type:", 13) == 0;
  curl_slist* headers = own_type ? nullptr : curl_slist_append(nullptr, "Content-Type: application/json");
  if (!extra_header.empty()) headers = curl_slist_append(headers, extra_header.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &append_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (post_body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body->c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(post_body->size()));
  }
  r.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_header* h = nullptr;
  if (curl_easy_header(c, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
    r.retry_after = h->value;
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  return r;
}

inline bool wait_until(const std::function<bool()>& cond) {
  auto end = Clock::now() + kDeadline;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
  }
  return cond();
}

inline int word_count(const std::string& s) {
  std::istringstream in(s);
  int n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

// Sum of the samples of `name` whose labels contain `label` (Prometheus text).
inline double metric(const std::string& text, const std::string& name, const std::string& label = "") {
  std::istringstream in(text);
  double sum = 0;
  bool found = false;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size() + 1, name + "{") != 0) continue;
    if (!label.empty() && line.find(label) == std::string::npos) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    found = true;
  }
  return found ? sum : std::nan("");
}

class FakeGpu {
 public:
  explicit FakeGpu(std::vector<std::string> args) {
    const char* env = std::getenv("FAKE_GPU_BIN");
    std::string bin = env && *env ? env : "build/fake_gpu";
    if (access(bin.c_str(), X_OK) != 0) {
      error_ = "fake_gpu binary not found at " + bin + " (set FAKE_GPU_BIN)";
      return;
    }
    int out[2];
    if (pipe(out) != 0) {
      error_ = "pipe failed";
      return;
    }
    std::vector<std::string> argv_s = {bin, "--host", "127.0.0.1", "--port", "0"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    int rc = posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    if (rc != 0) {
      close(out[0]);
      pid_ = -1;
      error_ = "posix_spawn failed";
      return;
    }
    std::string line = read_line(out[0]);
    close(out[0]);
    const std::string prefix = "listening 127.0.0.1:";
    if (line.compare(0, prefix.size(), prefix) != 0) {
      error_ = "unexpected first line: '" + line + "'";
      return;
    }
    base_ = "http://127.0.0.1:" + line.substr(prefix.size());
    // Up means any HTTP answer: /health may be 503 on purpose.
    if (!wait_until([&] { return http(url("/health"), std::nullopt, 500).status != 0; })) {
      error_ = "no answer on /health";
    }
  }

  ~FakeGpu() {
    if (pid_ > 0) {
      EXPECT_EQ(stop(), 0) << "fake_gpu did not exit cleanly on SIGTERM";
    }
  }

  const std::string& error() const { return error_; }
  pid_t pid() const { return pid_; }
  std::string url(const std::string& path) const { return base_ + path; }
  Reply get(const std::string& path, long timeout_ms = 5000) const {
    return http(url(path), std::nullopt, timeout_ms);
  }
  Reply post(const std::string& path, const json& body, long timeout_ms = 5000) const {
    return http(url(path), body.dump(), timeout_ms);
  }
  // With one more request header ("Authorization: Bearer ...").
  Reply get_with(const std::string& header, const std::string& path) const {
    return http(url(path), std::nullopt, 5000, header);
  }
  Reply post_with(const std::string& header, const std::string& path, const json& body) const {
    return http(url(path), body.dump(), 5000, header);
  }
  std::string metrics() const { return get("/metrics").body; }
  double metric(const std::string& name, const std::string& label = "") const {
    return fake_gpu_test::metric(metrics(), name, label);
  }

  // SIGTERM, then the exit status (-1 if it had to be killed).
  int stop() {
    kill(pid_, SIGTERM);
    int status = 0;
    bool exited = wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; });
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    return exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  static std::string read_line(int fd) {
    std::string line;
    auto end = Clock::now() + kDeadline;
    while (Clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char c;
      if (read(fd, &c, 1) != 1 || c == '\n') break;
      line.push_back(c);
    }
    return line;
  }

  pid_t pid_ = -1;
  std::string base_;
  std::string error_;
};

}  // namespace fake_gpu_test

#define START_FAKE_GPU(var, ...)          \
  FakeGpu var(std::vector<std::string>{__VA_ARGS__}); \
  ASSERT_EQ(var.error(), "")
