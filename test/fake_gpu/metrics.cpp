#include "metrics.hpp"

#include <charconv>
#include <cmath>

namespace npc_scale::fake_gpu {

const char* fault_kind_name(FaultKind k) {
  switch (k) {
    case FaultKind::error: return "error";
    case FaultKind::hang: return "hang";
    case FaultKind::slow: return "slow";
    case FaultKind::malformed: return "malformed";
    case FaultKind::drop: return "drop";
    case FaultKind::abort: return "abort";
  }
  return "unknown";
}

namespace {

class Writer {
 public:
  explicit Writer(const std::string& model) : label_("model_name=\"" + model + "\"") {}

  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // `extra` is an optional leading label pair such as kind="drop".
  void sample(const char* name, uint64_t value, const std::string& extra = "") {
    sample(std::string(name), std::to_string(value), extra);
  }
  void sample(const std::string& name, const std::string& value, const std::string& extra = "") {
    out_ += name;
    out_ += '{';
    if (!extra.empty()) {
      out_ += extra;
      out_ += ',';
    }
    out_ += label_;
    out_ += "} ";
    out_ += value;
    out_ += '\n';
  }
  std::string take() { return std::move(out_); }

 private:
  std::string label_;
  std::string out_;
};

// As Python's prometheus_client writes floats (repr: the shortest form that
// reads back exactly; vLLM's bucket bounds read "1.0", "0.3"): a whole
// number keeps its ".0", and the exposition format's NaN and +Inf.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[400];  // a fixed-notation double runs to ~330 characters
  // repr's notation: fixed from 1e-4 up to 1e16, scientific outside.
  const double a = std::fabs(v);
  const auto format = a == 0 || (a >= 1e-4 && a < 1e16) ? std::chars_format::fixed : std::chars_format::scientific;
  const auto res = std::to_chars(buf, buf + sizeof(buf), v, format);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

void Histogram::observe(double value, uint64_t times) {
  size_t i = 0;
  while (i < bound_count && value > bounds[i]) i++;
  counts[i] += times;
  sum += value * static_cast<double>(times);
  count += times;
}

namespace {
void write_histogram(Writer& w, const char* name, const char* help, const Histogram& h) {
  w.family(name, "histogram", help);
  const std::string base = name;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bound_count; i++) {
    cumulative += h.counts[i];
    w.sample(base + "_bucket", std::to_string(cumulative), "le=\"" + number(h.bounds[i]) + "\"");
  }
  w.sample(base + "_bucket", std::to_string(h.count), "le=\"+Inf\"");
  w.sample(base + "_sum", number(h.sum));
  w.sample(base + "_count", std::to_string(h.count));
}
}  // namespace

std::string render_metrics(const MetricsSnapshot& s) {
  Writer w(s.model);
  w.family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
  w.sample("vllm:num_requests_running", s.running);
  w.family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
  w.sample("vllm:num_requests_waiting", s.waiting);
  w.family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
  w.sample("vllm:kv_cache_usage_perc", number(s.kv_cache_usage));
  w.family("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.");
  w.sample("vllm:num_preemptions_total", s.preemptions);
  w.family("vllm:request_success_total", "counter", "Count of successfully processed requests.");
  w.sample("vllm:request_success_total", s.success_stop, "finished_reason=\"stop\"");
  w.sample("vllm:request_success_total", s.success_length, "finished_reason=\"length\"");
  w.sample("vllm:request_success_total", s.success_abort, "finished_reason=\"abort\"");
  // vLLM's names and help texts. The inter-token histogram twice: vLLM
  // 0.10's name and the one 0.11 renamed it to, so clients of either find it.
  static const struct {
    const char* name;
    const char* help;
    Histogram MetricsSnapshot::*of;
  } kHistograms[] = {
      {"vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
       &MetricsSnapshot::e2e_latency},
      {"vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
       &MetricsSnapshot::queue_time},
      {"vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
       &MetricsSnapshot::prefill_time},
      {"vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
       &MetricsSnapshot::decode_time},
      {"vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.",
       &MetricsSnapshot::inference_time},
      {"vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
       &MetricsSnapshot::first_token},
      {"vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
       &MetricsSnapshot::inter_token},
      {"vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
       &MetricsSnapshot::inter_token},
  };
  for (const auto& h : kHistograms) write_histogram(w, h.name, h.help, s.*h.of);
  w.family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
  w.sample("vllm:prompt_tokens_total", s.prompt_tokens);
  w.family("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
  w.sample("vllm:generation_tokens_total", s.generation_tokens);

  w.family("fake_gpu_requests_total", "counter", "Inference requests received, faulted ones included.");
  w.sample("fake_gpu_requests_total", s.requests_total);
  w.family("fake_gpu_chat_requests_total", "counter", "Of those, requests on /v1/chat/completions.");
  w.sample("fake_gpu_chat_requests_total", s.chat_requests_total);
  w.family("fake_gpu_inflight", "gauge", "Inference requests accepted and not answered yet.");
  w.sample("fake_gpu_inflight", s.inflight);
  w.family("fake_gpu_stalled", "gauge", "1 while the GPU is stalled (POST /admin/stall): nothing runs on.");
  w.sample("fake_gpu_stalled", s.stalled ? 1 : 0);
  w.family("fake_gpu_peak_running", "gauge", "Most requests ever running at once (since start or reset).");
  w.sample("fake_gpu_peak_running", s.peak_running);
  w.family("fake_gpu_peak_inflight", "gauge", "Most requests ever in flight at once (since start or reset).");
  w.sample("fake_gpu_peak_inflight", s.peak_inflight);
  w.family("fake_gpu_errors_injected_total", "counter", "Faults injected, by kind.");
  for (size_t k = 0; k < kFaultKinds; ++k) {
    w.sample("fake_gpu_errors_injected_total", s.faults[k],
             std::string("kind=\"") + fault_kind_name(static_cast<FaultKind>(k)) + "\"");
  }
  w.family("fake_gpu_prefix_cache_hits_total", "counter", "Prompts whose prefix was in the simulated prefix cache.");
  w.sample("fake_gpu_prefix_cache_hits_total", s.prefix_hits);
  w.family("fake_gpu_prefix_cache_queries_total", "counter", "Prompts looked up in the simulated prefix cache.");
  w.sample("fake_gpu_prefix_cache_queries_total", s.prefix_queries);
  w.family("fake_gpu_client_disconnects_total", "counter", "Pending requests aborted because the client went away.");
  w.sample("fake_gpu_client_disconnects_total", s.client_disconnects);
  return w.take();
}

}  // namespace npc_scale::fake_gpu
