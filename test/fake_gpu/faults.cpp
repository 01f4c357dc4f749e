#include "faults.hpp"

namespace npc_scale::fake_gpu {

using nlohmann::json;

nlohmann::ordered_json faults_to_json(const FaultConfig& c) {
  return nlohmann::ordered_json{{"error_rate", c.error_rate},       {"error_status", c.error_status},
              {"retry_after", c.retry_after},     {"hang_rate", c.hang_rate},
              {"hang_ms", c.hang_ms},             {"slow_rate", c.slow_rate},
              {"slow_ms", c.slow_ms},             {"malformed_rate", c.malformed_rate},
              {"drop_rate", c.drop_rate},         {"abort_rate", c.abort_rate},
              {"fault_seed", c.fault_seed},
              {"ignore_structured_outputs", c.ignore_structured_outputs}};
}

namespace {

std::optional<std::string> read_rate(const json& v, const std::string& key,
                                     double* out) {
  if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1) {
    return key + " must be a number in [0, 1]";
  }
  *out = v.get<double>();
  return std::nullopt;
}

std::optional<std::string> read_nonneg(const json& v, const std::string& key,
                                       int64_t max, int64_t* out) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > max) {
    return key + " must be an integer in [0, " + std::to_string(max) + "]";
  }
  *out = v.get<int64_t>();
  return std::nullopt;
}

}  // namespace

std::optional<std::string> merge_faults(FaultConfig& cfg, const json& patch) {
  if (!patch.is_object()) return std::string("fault config must be a JSON object");
  FaultConfig next = cfg;
  constexpr int64_t kMaxMs = 24LL * 3600 * 1000;
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    std::optional<std::string> err;
    int64_t n = 0;
    if (k == "error_rate") {
      err = read_rate(v, k, &next.error_rate);
    } else if (k == "hang_rate") {
      err = read_rate(v, k, &next.hang_rate);
    } else if (k == "slow_rate") {
      err = read_rate(v, k, &next.slow_rate);
    } else if (k == "malformed_rate") {
      err = read_rate(v, k, &next.malformed_rate);
    } else if (k == "drop_rate") {
      err = read_rate(v, k, &next.drop_rate);
    } else if (k == "abort_rate") {
      err = read_rate(v, k, &next.abort_rate);
    } else if (k == "error_status") {
      if (!v.is_number_integer() ||
          (v != 500 && v != 503 && v != 429)) {
        err = "error_status must be 500, 503 or 429";
      } else {
        next.error_status = v.get<int>();
      }
    } else if (k == "retry_after") {
      if (!(err = read_nonneg(v, k, 86400, &n))) next.retry_after = static_cast<int>(n);
    } else if (k == "hang_ms") {
      if (!(err = read_nonneg(v, k, kMaxMs, &n))) next.hang_ms = n;
    } else if (k == "slow_ms") {
      if (!(err = read_nonneg(v, k, kMaxMs, &n))) next.slow_ms = n;
    } else if (k == "fault_seed") {
      if (!v.is_number_unsigned()) {
        err = "fault_seed must be a non-negative integer";
      } else {
        next.fault_seed = v.get<uint64_t>();
      }
    } else if (k == "ignore_structured_outputs") {
      if (!v.is_boolean()) {
        err = "ignore_structured_outputs must be true or false";
      } else {
        next.ignore_structured_outputs = v.get<bool>();
      }
    } else {
      err = "unknown fault key: " + k;
    }
    if (err) return err;
  }
  cfg = next;
  return std::nullopt;
}

FaultRoll FaultRoller::roll(const FaultConfig& cfg) {
  // `u < rate` makes rate 0 never and rate 1 always fire, since u is in [0,1).
  double u_drop = rng_.uniform();
  double u_error = rng_.uniform();
  double u_hang = rng_.uniform();
  double u_slow = rng_.uniform();
  double u_malformed = rng_.uniform();
  FaultRoll r;
  r.drop = u_drop < cfg.drop_rate;
  r.error = !r.drop && u_error < cfg.error_rate;
  bool served = !r.drop && !r.error;
  r.hang = served && u_hang < cfg.hang_rate;
  r.slow = served && u_slow < cfg.slow_rate;
  r.malformed = served && u_malformed < cfg.malformed_rate;
  const double u_abort = abort_rng_.uniform();
  r.abort = served && u_abort < cfg.abort_rate;
  return r;
}

}  // namespace npc_scale::fake_gpu
