// vLLM's OpenAI-compatible wire format: request validation and response
// shaping, as JSON in / JSON out with no HTTP involved.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "text_gen.hpp"

namespace npc_scale::fake_gpu {

struct ServedModel {
  std::string name = "npc-llm";
  int max_model_len = 8192;
  // vLLM's --scheduling-policy priority; under its default (fcfs) a request
  // with a nonzero priority is refused.
  bool priority_scheduling = false;
  // vLLM's --api-key: every /v1/ route wants "Authorization: Bearer <key>"
  // (401 otherwise); /health and /metrics stay open. Empty: no key.
  std::string api_key;
};

struct ApiError {
  int status = 400;
  std::string type;  // vLLM's names: BadRequestError, NotFoundError, ...
  std::string message;
};

ApiError bad_request(std::string message);
// FastAPI reads a body as JSON only when its Content-Type is absent,
// application/json or application/<x>+json (parameters such as charset
// aside); anything else fails vLLM's request validation: a 400. nullopt
// when the header is acceptable.
std::optional<ApiError> check_content_type(const char* content_type);
// vLLM's body: {"error":{"message","type","param":null,"code":status}}.
// Responses use ordered_json so keys come out in vLLM's order.
nlohmann::ordered_json error_json(const ApiError& e);

struct InferenceRequest {
  bool chat = false;
  // Completions: one entry per prompt. Chat: the conversation rendered as
  // "role: content" lines, which is also what gets hashed and counted.
  std::vector<std::string> prompts;
  std::vector<int> prompt_tokens;  // count_tokens of each prompt
  GenParams gen;
  int n = 1;
  int priority = 0;
};

using ParseResult = std::variant<InferenceRequest, ApiError>;

// Validates a /v1/completions (chat=false) or /v1/chat/completions body.
// Unknown fields are ignored, as vLLM does.
ParseResult parse_inference_request(bool chat, const nlohmann::json& body,
                                    const ServedModel& model);
// Same from the raw body; unparseable JSON is a 400.
ParseResult parse_inference_request(bool chat, std::string_view body,
                                    const ServedModel& model);

struct InferenceResult {
  std::vector<Generation> choices;  // prompt-major: index = prompt * n + i
  int prompt_tokens = 0;            // each prompt counted once, as vLLM
  int completion_tokens = 0;        // summed over all choices
  int max_choice_tokens = 0;        // what the GPU time depends on
};

// `nonce` only matters for temperature > 0 without a seed.
InferenceResult run_inference(const InferenceRequest& req, uint64_t nonce);

nlohmann::ordered_json completion_response(const InferenceRequest& req,
                                   const InferenceResult& res,
                                   std::string_view id, int64_t created,
                                   std::string_view model);

nlohmann::ordered_json models_response(const ServedModel& model, int64_t created);
// The vLLM release whose API and metrics the simulation follows (GET /version).
inline constexpr const char* kVllmVersion = "0.10.1";

}  // namespace npc_scale::fake_gpu
