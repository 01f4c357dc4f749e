#include "protocol.hpp"

#include <cctype>
#include <limits>
#include <optional>

namespace npc_scale::fake_gpu {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

constexpr int kMaxN = 128;

bool present(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

// Reads an optional integer; vLLM (pydantic) rejects floats and booleans too.
std::optional<ApiError> read_int(const json& body, const char* key,
                                 int64_t lo, int64_t hi, int64_t* out) {
  if (!present(body, key)) return std::nullopt;
  const json& v = body.at(key);
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() &&
       v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    return bad_request(std::string(key) + " must be an integer");
  }
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    std::string msg = std::string(key) + " must be at least " + std::to_string(lo);
    if (x > hi) msg = std::string(key) + " must be at most " + std::to_string(hi);
    return bad_request(msg + ", got " + std::to_string(x) + ".");
  }
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> read_string_list(const json& v, const char* what,
                                         bool allow_single,
                                         std::vector<std::string>* out) {
  if (allow_single && v.is_string()) {
    out->push_back(v.get<std::string>());
    return std::nullopt;
  }
  if (!v.is_array()) {
    return bad_request(std::string(what) + (allow_single ? " must be a string or a list of strings"
                                                         : " must be a list of strings"));
  }
  for (const auto& e : v) {
    if (!e.is_string()) return bad_request(std::string(what) + " must contain only strings");
    out->push_back(e.get<std::string>());
  }
  return std::nullopt;
}

std::optional<ApiError> read_message_content(const json& msg, std::string* out) {
  auto it = msg.find("content");
  if (it == msg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    *out = it->get<std::string>();
    return std::nullopt;
  }
  if (!it->is_array()) return bad_request("message content must be a string or a list of parts");
  // OpenAI content parts: only text parts make sense for a text-only model.
  for (const auto& part : *it) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return bad_request("only text content parts are supported");
    }
    if (!out->empty()) out->push_back('\n');
    out->append(part["text"].get<std::string>());
  }
  return std::nullopt;
}

// Chat prompt as one text; its word count is the chat's prompt_tokens.
std::optional<ApiError> render_messages(const json& body, std::string* out) {
  if (!body.contains("messages") || !body["messages"].is_array() ||
      body["messages"].empty()) {
    return bad_request("messages must be a non-empty list");
  }
  for (const auto& m : body["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return bad_request("each message must be an object with a string role");
    }
    std::string content;
    if (auto err = read_message_content(m, &content)) return err;
    out->append(m["role"].get<std::string>()).append(": ").append(content).push_back('\n');
  }
  return std::nullopt;
}

std::optional<ApiError> read_choices(const json& body, std::vector<std::string>* out) {
  const json* choice = nullptr;
  if (present(body, "structured_outputs")) {
    const json& so = body["structured_outputs"];
    if (!so.is_object()) return bad_request("structured_outputs must be an object");
    if (present(so, "choice")) choice = &so["choice"];
  }
  if (!choice && present(body, "guided_choice")) choice = &body["guided_choice"];
  if (!choice) return std::nullopt;
  if (auto err = read_string_list(*choice, "choice", false, out)) return err;
  if (out->empty()) return bad_request("choice must be a non-empty list of strings");
  return std::nullopt;
}

ojson usage_json(const InferenceResult& r) {
  return ojson{{"prompt_tokens", r.prompt_tokens},
              {"total_tokens", r.prompt_tokens + r.completion_tokens},
              {"completion_tokens", r.completion_tokens},
              {"prompt_tokens_details", nullptr}};
}

ojson stop_reason_json(const Generation& g) {
  return g.stop_reason ? ojson(*g.stop_reason) : ojson(nullptr);
}

}  // namespace

ApiError bad_request(std::string message) {
  return ApiError{400, "BadRequestError", std::move(message)};
}

std::optional<ApiError> check_content_type(const char* content_type) {
  if (content_type == nullptr || *content_type == '\0') return std::nullopt;
  std::string media(content_type);
  media = media.substr(0, media.find(';'));
  const size_t first = media.find_first_not_of(" \t");
  const size_t last = media.find_last_not_of(" \t");
  media = first == std::string::npos ? "" : media.substr(first, last - first + 1);
  for (char& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string app = "application/";
  if (media.rfind(app, 0) == 0) {
    const std::string subtype = media.substr(app.size());
    if (subtype == "json" || (subtype.size() > 5 && subtype.compare(subtype.size() - 5, 5, "+json") == 0)) {
      return std::nullopt;
    }
  }
  // The body then reaches the model as bytes, which pydantic refuses.
  return bad_request(
      "[{'type': 'model_attributes_type', 'loc': ('body',), "
      "'msg': 'Input should be a valid dictionary or object to extract fields from'}]");
}

ojson error_json(const ApiError& e) {
  return ojson{{"error",
               {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", e.status}}}};
}

ParseResult parse_inference_request(bool chat, std::string_view body,
                                    const ServedModel& model) {
  json parsed = json::parse(body.begin(), body.end(), nullptr, false);
  if (parsed.is_discarded()) return bad_request("request body is not valid JSON");
  return parse_inference_request(chat, parsed, model);
}

ParseResult parse_inference_request(bool chat, const json& body,
                                    const ServedModel& model) {
  if (!body.is_object()) return bad_request("request body must be a JSON object");

  if (present(body, "model")) {
    if (!body["model"].is_string()) return bad_request("model must be a string");
    const std::string& name = body["model"].get_ref<const std::string&>();
    if (name != model.name) {
      return ApiError{404, "NotFoundError", "The model `" + name + "` does not exist."};
    }
  }
  if (present(body, "stream") && body["stream"] != false) {
    return bad_request("stream is not supported by fake_gpu");
  }

  InferenceRequest req;
  req.chat = chat;
  if (chat) {
    std::string rendered;
    if (auto err = render_messages(body, &rendered)) return *err;
    req.prompts.push_back(std::move(rendered));
  } else {
    if (!present(body, "prompt")) return bad_request("prompt is required");
    if (auto err = read_string_list(body["prompt"], "prompt", true, &req.prompts)) return *err;
    if (req.prompts.empty()) return bad_request("prompt must not be an empty list");
    for (const auto& p : req.prompts) {
      if (p.empty()) return bad_request("The decoder prompt cannot be empty");
    }
  }
  for (const auto& p : req.prompts) req.prompt_tokens.push_back(count_tokens(p));

  int64_t v = 0;
  const char* max_key = "max_tokens";
  if (chat && present(body, "max_completion_tokens")) max_key = "max_completion_tokens";
  bool has_max = present(body, max_key);
  if (auto err = read_int(body, max_key, 1, std::numeric_limits<int32_t>::max(), &v)) return *err;
  if (has_max) req.gen.max_tokens = static_cast<int>(v);

  if (present(body, "temperature")) {
    if (!body["temperature"].is_number()) return bad_request("temperature must be a number");
    double t = body["temperature"].get<double>();
    if (t < 0) return bad_request("temperature must be non-negative, got " + std::to_string(t) + ".");
    req.gen.temperature = t;
  }
  if (present(body, "seed")) {
    if (auto err = read_int(body, "seed", std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max(), &v)) {
      return *err;
    }
    req.gen.seed = v;
  }
  v = 1;
  if (auto err = read_int(body, "n", 1, kMaxN, &v)) return *err;
  req.n = static_cast<int>(v);
  // vLLM's SamplingParams: greedy sampling has one answer per prompt.
  if (req.n > 1 && req.gen.temperature < 1e-5) {
    return bad_request("n must be 1 when using greedy sampling, got " + std::to_string(req.n) + ".");
  }
  v = 0;
  if (auto err = read_int(body, "priority", std::numeric_limits<int32_t>::min(),
                          std::numeric_limits<int32_t>::max(), &v)) {
    return *err;
  }
  if (v != 0 && !model.priority_scheduling) {
    return bad_request("Got priority " + std::to_string(v) + " but Priority scheduling is not enabled.");
  }
  req.priority = static_cast<int>(v);
  if (present(body, "stop")) {
    if (auto err = read_string_list(body["stop"], "stop", true, &req.gen.stop)) return *err;
    for (const std::string& s : req.gen.stop) {
      if (s.empty()) return bad_request("stop cannot contain an empty string.");
    }
  }
  if (auto err = read_choices(body, &req.gen.choices)) return *err;

  // Context-window check, worded like vLLM. A chat without max_tokens may use
  // the rest of the window but stops at a simulated EOS well before it.
  for (int pt : req.prompt_tokens) {
    if (!has_max && chat) {
      if (pt >= model.max_model_len) {
        return bad_request("This model's maximum context length is " +
                           std::to_string(model.max_model_len) + " tokens. However, your request has " +
                           std::to_string(pt) + " input tokens. Please reduce the length of the input messages.");
      }
      continue;
    }
    int64_t total = static_cast<int64_t>(pt) + req.gen.max_tokens;
    if (total > model.max_model_len) {
      return bad_request("This model's maximum context length is " +
                         std::to_string(model.max_model_len) + " tokens. However, you requested " +
                         std::to_string(total) + " tokens (" + std::to_string(pt) +
                         " in the messages, " + std::to_string(req.gen.max_tokens) +
                         " in the completion). Please reduce the length of the messages or completion.");
    }
  }
  if (!has_max && chat) {
    req.gen.natural_stop = true;
    req.gen.max_tokens = model.max_model_len - req.prompt_tokens[0];
  }
  // The simulation writes every answer at arrival, on its event loop: a
  // request asking for more words than this would hold that loop (and the
  // memory) far longer than any real one. vLLM has no such limit; this
  // stand-in says so plainly instead of stalling every other request.
  constexpr int64_t kMaxSimulatedTokens = 4'000'000;
  const int64_t asked = static_cast<int64_t>(req.prompts.size()) * req.n * req.gen.max_tokens;
  if (asked > kMaxSimulatedTokens) {
    return bad_request("the simulated GPU writes at most " + std::to_string(kMaxSimulatedTokens) +
                       " tokens per request (prompts x n x max_tokens); this one asks for " +
                       std::to_string(asked));
  }
  return req;
}

InferenceResult run_inference(const InferenceRequest& req, uint64_t nonce) {
  InferenceResult r;
  r.choices.reserve(req.prompts.size() * static_cast<size_t>(req.n));
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    r.prompt_tokens += req.prompt_tokens[p];
    for (int i = 0; i < req.n; ++i) {
      uint64_t key = sampling_key(req.prompts[p], req.gen, nonce, i);
      r.choices.push_back(generate(key, req.gen));
      int t = r.choices.back().completion_tokens;
      r.completion_tokens += t;
      r.max_choice_tokens = std::max(r.max_choice_tokens, t);
    }
  }
  return r;
}

ojson completion_response(const InferenceRequest& req, const InferenceResult& res,
                         std::string_view id, int64_t created, std::string_view model) {
  ojson choices = ojson::array();
  for (size_t i = 0; i < res.choices.size(); ++i) {
    const Generation& g = res.choices[i];
    if (req.chat) {
      choices.push_back({{"index", i},
                         {"message",
                          {{"role", "assistant"},
                           {"content", g.text},
                           {"reasoning_content", nullptr},
                           {"tool_calls", ojson::array()}}},
                         {"logprobs", nullptr},
                         {"finish_reason", g.finish_reason},
                         {"stop_reason", stop_reason_json(g)}});
    } else {
      choices.push_back({{"index", i},
                         {"text", g.text},
                         {"logprobs", nullptr},
                         {"finish_reason", g.finish_reason},
                         {"stop_reason", stop_reason_json(g)},
                         {"prompt_logprobs", nullptr}});
    }
  }
  ojson out = {{"id", id},
              {"object", req.chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", std::move(choices)},
              {"usage", usage_json(res)}};
  if (req.chat) out["prompt_logprobs"] = nullptr;
  return out;
}

ojson models_response(const ServedModel& model, int64_t created) {
  return ojson{{"object", "list"},
              {"data",
               {{{"id", model.name},
                 {"object", "model"},
                 {"created", created},
                 {"owned_by", "vllm"},
                 {"root", model.name},
                 {"parent", nullptr},
                 {"max_model_len", model.max_model_len},
                 {"permission", ojson::array()}}}}};
}

}  // namespace npc_scale::fake_gpu
