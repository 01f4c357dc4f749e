// parse_vllm_load on a realistic vLLM /metrics page: sums running/waiting over
// label sets, ignores comments, other metrics, malformed lines and NaN.
#include <gtest/gtest.h>

#include "prometheus_text.hpp"

using npc_scale::parse_vllm_load;

TEST(PrometheusTextTest, RealisticVllmMetrics) {
  const std::string text =
      "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 12.0\n"
      "vllm:num_requests_running{engine=\"1\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3e0\n"
      "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
      "# TYPE vllm:num_requests_waiting gauge\n"
      "vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 4.0\n"
      "vllm:num_requests_waiting{engine=\"1\",model_name=\"x}y \\\"q\\\"\"} 1 1712345678000\n"
      "vllm:num_requests_waiting{engine=\"2\"} NaN\n"
      "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage.\n"
      "# TYPE vllm:gpu_cache_usage_perc gauge\n"
      "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.75\n"
      "vllm:num_requests_running_total{engine=\"0\"} 999\n"
      "vllm:num_requests_swapped{engine=\"0\"} 7.0\n"
      "vllm:num_requests_running{engine=\"9\" 5\n"     // unterminated labels
      "vllm:num_requests_running{engine=\"9\"} abc\n"  // not a number
      "vllm:num_requests_running{engine=\"9\"} 5 xyz\n"
      "vllm:num_requests_running{engine=\"9\"}5\n"     // no separator
      "vllm:num_requests_running\n"
      "garbage line without value\n"
      "  \t \r\n"
      "python_gc_objects_collected_total{generation=\"0\"} 1234.0\n";
  auto l = parse_vllm_load(text);
  ASSERT_TRUE(l.running.has_value());
  ASSERT_TRUE(l.waiting.has_value());
  EXPECT_DOUBLE_EQ(*l.running, 15.0);
  EXPECT_DOUBLE_EQ(*l.waiting, 5.0);
}

TEST(PrometheusTextTest, UnlabelledAndCrlf) {
  auto l = parse_vllm_load("vllm:num_requests_running 2\r\nvllm:num_requests_waiting 0.0\r\n");
  EXPECT_DOUBLE_EQ(l.running.value_or(-1), 2.0);
  EXPECT_DOUBLE_EQ(l.waiting.value_or(-1), 0.0);
}

TEST(PrometheusTextTest, MissingMetricsStayUnknown) {
  auto l = parse_vllm_load("# HELP foo\nfoo 1\nvllm:num_requests_waiting NaN\n");
  EXPECT_FALSE(l.running.has_value());
  EXPECT_FALSE(l.waiting.has_value());
  auto e = parse_vllm_load("");
  EXPECT_FALSE(e.running.has_value());
  EXPECT_FALSE(e.waiting.has_value());
}

TEST(PrometheusTextTest, LastLineWithoutNewline) {
  auto l = parse_vllm_load("vllm:num_requests_running{a=\"b\"} 1\nvllm:num_requests_running{a=\"c\"} 2");
  EXPECT_DOUBLE_EQ(l.running.value_or(-1), 3.0);
}
