#include "options.hpp"

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <map>
#include <vector>

namespace npc_scale::fake_gpu {

using nlohmann::json;

namespace {

bool to_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(s.c_str(), &end);
  return errno == 0 && end && *end == '\0';
}

bool to_int64(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtoll(s.c_str(), &end, 10);
  return errno == 0 && end && *end == '\0';
}

bool to_uint64(const std::string& s, uint64_t* out) {
  if (s.empty() || s[0] == '-') return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtoull(s.c_str(), &end, 10);
  return errno == 0 && end && *end == '\0';
}

}  // namespace

std::string usage_text() {
  return "usage: fake_gpu [options]\n"
         "  --host ADDR            listen address (127.0.0.1)\n"
         "  --port N               listen port, 0 = any free one (8000)\n"
         "  --model NAME           served model name (npc-llm)\n"
         "  --api-key KEY          /v1/ routes want \"Authorization: Bearer KEY\" (401 otherwise)\n"
         "  --profile NAME         rtx3090ti | p40 | instant (rtx3090ti)\n"
         "  --base-ms MS --per-token-ms MS --max-batch N --batch-slowdown F\n"
         "  --max-model-len N --prefill-per-token-ms MS --kv-cache-tokens N (0 = unlimited)\n"
         "                         override the profile\n"
         "  --error-rate R --error-status 500|503|429 --retry-after S\n"
         "  --hang-rate R --hang-ms MS --slow-rate R --slow-ms MS\n"
         "  --malformed-rate R --drop-rate R --abort-rate R --fault-seed N\n"
         "  --unhealthy            start with /health answering 503\n"
         "  --threads N            event loops sharing the port (1)\n"
         "  --keep-alive-ms MS     close a connection idle this long, as uvicorn does (5000)\n"
         "  --prefix-cache-entries N  simulated prefix-cache size (1024)\n"
         "  --scheduling-policy fcfs|priority  as vLLM's: fcfs refuses a nonzero priority (fcfs)\n"
         "  --pid-file PATH        write our pid there once listening; removed at exit\n";
}

std::optional<std::string> parse_options(int argc, const char* const* argv, Options* out) {
  Options o;
  std::string profile_name = "rtx3090ti";
  std::vector<std::function<void(GpuProfile&)>> overrides;
  json fault_patch = json::object();

  // Flags taking a value; each returns an error message or "" on success.
  std::map<std::string, std::function<std::string(const std::string&)>> flags;
  auto num = [&](const char* flag, double lo, std::function<void(double)> set) {
    flags[flag] = [flag, lo, set](const std::string& v) -> std::string {
      double d = 0;
      if (!to_double(v, &d) || d < lo) return std::string(flag) + " needs a number >= " + std::to_string(lo);
      set(d);
      return "";
    };
  };
  auto integer = [&](const char* flag, int64_t lo, int64_t hi, std::function<void(int64_t)> set) {
    flags[flag] = [flag, lo, hi, set](const std::string& v) -> std::string {
      int64_t n = 0;
      if (!to_int64(v, &n) || n < lo || n > hi) {
        return std::string(flag) + " needs an integer in [" + std::to_string(lo) + ", " +
               std::to_string(hi) + "]";
      }
      set(n);
      return "";
    };
  };

  flags["--host"] = [&](const std::string& v) { o.host = v; return std::string(); };
  flags["--model"] = [&](const std::string& v) {
    if (v.empty()) return std::string("--model needs a name");
    o.model = v;
    return std::string();
  };
  flags["--api-key"] = [&](const std::string& v) {
    if (v.empty()) return std::string("--api-key needs a key");
    o.api_key = v;
    return std::string();
  };
  flags["--profile"] = [&](const std::string& v) {
    if (!profile_by_name(v)) return "unknown profile " + v + " (rtx3090ti, p40, instant)";
    profile_name = v;
    return std::string();
  };
  flags["--pid-file"] = [&](const std::string& v) {
    if (v.empty()) return std::string("--pid-file needs a path");
    o.pid_file = v;
    return std::string();
  };
  flags["--scheduling-policy"] = [&](const std::string& v) {
    if (v != "fcfs" && v != "priority") return "unknown scheduling policy " + v + " (fcfs, priority)";
    o.priority_scheduling = v == "priority";
    return std::string();
  };
  integer("--port", 0, 65535, [&](int64_t n) { o.port = static_cast<int>(n); });
  integer("--threads", 1, 64, [&](int64_t n) { o.threads = static_cast<int>(n); });
  integer("--keep-alive-ms", 1, 86400000, [&](int64_t n) { o.keep_alive_ms = static_cast<int>(n); });
  integer("--prefix-cache-entries", 0, 10000000,
          [&](int64_t n) { o.prefix_cache_entries = static_cast<size_t>(n); });
  num("--base-ms", 0, [&](double d) { overrides.push_back([d](GpuProfile& p) { p.base_ms = d; }); });
  num("--per-token-ms", 0,
      [&](double d) { overrides.push_back([d](GpuProfile& p) { p.per_token_ms = d; }); });
  num("--batch-slowdown", 0,
      [&](double d) { overrides.push_back([d](GpuProfile& p) { p.batch_slowdown = d; }); });
  integer("--max-batch", 1, 10000000, [&](int64_t n) {
    overrides.push_back([n](GpuProfile& p) { p.max_batch = static_cast<int>(n); });
  });
  integer("--max-model-len", 1, 100000000, [&](int64_t n) {
    overrides.push_back([n](GpuProfile& p) { p.max_model_len = static_cast<int>(n); });
  });
  num("--prefill-per-token-ms", 0,
      [&](double d) { overrides.push_back([d](GpuProfile& p) { p.prefill_per_token_ms = d; }); });
  integer("--kv-cache-tokens", 0, 1000000000,
          [&](int64_t n) { overrides.push_back([n](GpuProfile& p) { p.kv_cache_tokens = n; }); });
  // Fault flags become one JSON patch so the CLI and POST /admin/faults
  // share validation.
  for (const char* key : {"error_rate", "hang_rate", "slow_rate", "malformed_rate", "drop_rate", "abort_rate"}) {
    std::string flag = "--" + std::string(key);
    for (auto& c : flag) c = c == '_' ? '-' : c;
    flags[flag] = [&fault_patch, key, flag](const std::string& v) -> std::string {
      double d = 0;
      if (!to_double(v, &d)) return flag + " needs a number";
      fault_patch[key] = d;
      return "";
    };
  }
  for (const char* key : {"error_status", "retry_after", "hang_ms", "slow_ms"}) {
    std::string flag = "--" + std::string(key);
    for (auto& c : flag) c = c == '_' ? '-' : c;
    flags[flag] = [&fault_patch, key, flag](const std::string& v) -> std::string {
      int64_t n = 0;
      if (!to_int64(v, &n)) return flag + " needs an integer";
      fault_patch[key] = n;
      return "";
    };
  }
  flags["--fault-seed"] = [&](const std::string& v) -> std::string {
    uint64_t n = 0;
    if (!to_uint64(v, &n)) return "--fault-seed needs a non-negative integer";
    fault_patch["fault_seed"] = n;
    return "";
  };

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg == "--unhealthy") {
      o.healthy = false;
      continue;
    }
    std::string value;
    bool inline_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos && arg.rfind("--", 0) == 0) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    auto it = flags.find(arg);
    if (it == flags.end()) return "unknown option " + arg;
    if (!inline_value) {
      if (i + 1 >= argc) return arg + " needs a value";
      value = argv[++i];
    }
    std::string err = it->second(value);
    if (!err.empty()) return err;
  }

  o.profile = *profile_by_name(profile_name);
  for (auto& apply : overrides) apply(o.profile);
  // As vLLM, which refuses to start when one full-length request would not
  // fit in its KV cache.
  if (o.profile.kv_cache_tokens > 0 && o.profile.kv_cache_tokens < o.profile.max_model_len) {
    return "--kv-cache-tokens " + std::to_string(o.profile.kv_cache_tokens) + " is below --max-model-len " +
           std::to_string(o.profile.max_model_len) + ": a full-length request would never fit (0 = unlimited)";
  }
  if (auto err = merge_faults(o.faults, fault_patch)) return *err;
  *out = o;
  return std::nullopt;
}

}  // namespace npc_scale::fake_gpu
