// The simulated GPU: timing profiles, a vLLM-like continuous-batching
// scheduler (bounded running set + priority-ordered waiting queue) and a
// prefix cache. Pure logic: the caller passes the time, the server arms a
// libevent timer for the next finish, tests drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace npc_scale::fake_gpu {

struct GpuProfile {
  std::string name;
  double base_ms = 0;       // fixed cost per request (prefill, scheduling)
  double per_token_ms = 0;  // decode cost per generated token, batch of one
  int max_batch = 1;        // running-set bound, like vLLM's max_num_seqs
  // Extra per-token time, as a fraction, when the batch is full; scales
  // linearly with the running count (bigger batches decode slower per step).
  double batch_slowdown = 0;
  int max_model_len = 8192;
  // Prefill multiplier on a prefix-cache hit (the prefill is mostly reused).
  double prefix_hit_factor = 0.5;
  // Prefill time per prompt token, on top of base_ms: a long prompt takes
  // longer before its first token.
  double prefill_per_token_ms = 0;
  // KV-cache size in tokens (0 = unlimited). A running request holds its
  // prompt's tokens plus those generated so far, per sequence; as vLLM's
  // scheduler, a waiting request is admitted only while there is room, and
  // when a decode step finds the cache full the newest running request is
  // preempted (its KV freed, recomputed once it is admitted again).
  int64_t kv_cache_tokens = 0;
};

// "rtx3090ti", "p40" or "instant"; nullopt for anything else.
std::optional<GpuProfile> profile_by_name(std::string_view name);
std::vector<std::string> profile_names();

// A request's time before its first token (scheduling, prefill of
// `tokens` prompt tokens): base_ms + prefill_per_token_ms * tokens, scaled
// by prefix_hit_factor on a prefix-cache hit. Not slowed by the batch.
double prefill_ms(const GpuProfile& p, bool prefix_hit, int64_t tokens = 0);
// Time of one decode step, i.e. per generated token of each running
// request, while `running` requests share the GPU:
//   per_token_ms * (1 + batch_slowdown * (running - 1) / max_batch)
double step_ms(const GpuProfile& p, int running);

struct Job {
  uint64_t id = 0;
  int priority = 0;  // lower runs first, like vLLM's priority scheduling
  int completion_tokens = 1;
  bool prefix_hit = false;
  double extra_ms = 0;    // the slow fault: added to the fixed cost
  int prompt_tokens = 0;  // all of the request's prompts: its prefill and KV
  int sequences = 1;      // prompts x n: each grows its own KV while decoding
};

// What a call to the scheduler changed: the jobs that finished by then, in
// the order they finished, and when the GPU's state changes next if no
// request arrives or leaves: a finish, or with a KV-cache limit also a
// prefill ending or the cache filling up (none: nothing runs). A caller
// calls advance() then.
struct Progress {
  std::vector<uint64_t> finished;
  std::optional<double> next_finish_ms;
  struct Times {
    // Where a finished job's time went, in ms of the scheduler's clock, as
    // vLLM's request metrics split it: waiting from its submission to its
    // first admission, prefill from there to its first token (the end of
    // its first decode step: this model decodes every token, where vLLM's
    // prefill step yields the first), decode from there to its last; a preempted
    // job's time out of the batch counts in its decode (or prefill, if it
    // had no token yet), as vLLM keeps a request's first timestamps.
    double queued_ms = 0, prefill_ms = 0, decode_ms = 0;
    int tokens = 0;  // generated: decode_ms spans tokens - 1 intervals
  };
  std::vector<Times> times;  // of `finished`, in the same order
};

// Continuous batching, as vLLM's engine: every running request advances by
// one token per decode step, and a step's time depends on how many run at
// that moment. So a request admitted into an empty GPU slows down as others
// join and speeds up as they leave; its finishing time is known only up to
// the next change, and every call below moves the simulated clock to
// `now_ms` first (finishing what was due by then, in order).
class Scheduler {
 public:
  explicit Scheduler(GpuProfile profile) : profile_(std::move(profile)) {}

  // Admits the job if a batch slot is free, otherwise queues it. A job with
  // no work at all (the instant profile) is finished at once.
  Progress submit(const Job& job, double now_ms);
  // Just moves the clock: what has finished by now_ms.
  Progress advance(double now_ms);
  // Aborts a running or waiting job (client went away); a freed slot goes to
  // the next waiting job. Unknown ids are ignored.
  Progress cancel(uint64_t id, double now_ms);

  size_t running() const { return running_.size(); }
  size_t waiting() const { return waiting_.size(); }
  size_t peak_running() const { return peak_running_; }
  // KV-cache tokens the running requests hold, and that as a fraction of
  // the cache (0 when it is unlimited).
  double kv_used() const;
  double kv_usage() const;
  uint64_t preemptions() const { return preemptions_; }
  void reset_preemptions() { preemptions_ = 0; }
  // Peak restarts from what is running now: in-flight work is still real.
  void reset_peak() { peak_running_ = running_.size(); }
  const GpuProfile& profile() const { return profile_; }

 private:
  // A job's first timestamps on the scheduler's clock, kept through
  // preemption (negative: not yet).
  struct Stamps {
    double submitted_ms = -1;
    double admitted_ms = -1;
    double first_token_ms = -1;
  };
  struct Running {
    Job job;
    uint64_t arrival;        // first submission: keeps its place if preempted
    Stamps stamps;
    double fixed_left_ms;   // per-request cost still to go (base_ms, a slow fault), spent first
    double prompt_left_ms;  // then the prompt's prefill, in ms of the GPU to itself:
                            // the GPU's prefill throughput is shared by every job at this stage
    double tokens_left;     // then decode steps
  };
  bool prefilling_prompt(const Running& r) const { return r.fixed_left_ms <= 0 && r.prompt_left_ms > 0; }
  int prompt_sharers() const;  // jobs prefilling their prompts now
  // The next change with the batch as it is: what happens first, and in how
  // many ms from clock_ (a finish, a prefill ending, the KV cache full).
  struct NextEvent {
    double in_ms;
    bool kv_full;  // the cache fills up first (or at the same time)
  };
  // Until it finishes, with the batch and the prefill sharing as they are.
  double left_ms(const Running& r, double step, int sharers) const;
  // Until its current stage (fixed cost, prompt prefill, decode) ends.
  double stage_left_ms(const Running& r, double step, int sharers) const;
  double kv_of(const Running& r) const;
  bool kv_limited() const { return profile_.kv_cache_tokens > 0; }
  std::optional<NextEvent> next_event() const;
  // Runs the clock to now_ms event by event: each finish changes the batch
  // (and so the step time) and may admit waiting jobs; a full KV cache
  // preempts the newest running job.
  void run_until(double now_ms, std::vector<uint64_t>* finished, std::vector<Progress::Times>* times);
  // Progresses every running job by the time from clock_ to t, at the
  // current step time (the batch does not change in between).
  void progress_to(double t);
  // A preempted job comes back with its tokens so far (tokens_left), which
  // are prefilled again along with its prompt.
  void admit(const Job& job, uint64_t arrival, double tokens_left, Stamps stamps);
  void enqueue(const Job& job, uint64_t arrival, double tokens_left, Stamps stamps);
  // Admits waiting jobs in order while a slot and (with a limit) the KV
  // cache have room; the first that does not fit holds the rest back.
  void fill_slots();
  // Frees the newest (then lowest-priority) running job's KV and puts it
  // back in the waiting queue.
  void preempt_newest();
  // Its Times, finishing now (clock_ms_).
  Progress::Times times_of(const Running& r) const;
  Progress report(std::vector<uint64_t> finished, std::vector<Progress::Times> times) const;

  GpuProfile profile_;
  double clock_ms_ = 0;
  bool clock_started_ = false;
  std::vector<Running> running_;  // admission order: ties finish in it
  struct Waiting {
    Job job;
    double tokens_left;  // fewer than job.completion_tokens once preempted
    Stamps stamps;
  };
  // (priority, arrival) keeps FIFO order within one priority.
  std::map<std::pair<int, uint64_t>, Waiting> waiting_;
  std::unordered_map<uint64_t, std::pair<int, uint64_t>> waiting_keys_;
  uint64_t arrivals_ = 0;
  size_t peak_running_ = 0;
  uint64_t preemptions_ = 0;
};

// Bounded LRU of hashes of prompt prefixes: a cheap model of vLLM's automatic
// prefix caching, where a repeated system prompt skips most of the prefill.
class PrefixCache {
 public:
  explicit PrefixCache(size_t capacity = 1024, size_t prefix_bytes = 64)
      : capacity_(capacity), prefix_bytes_(prefix_bytes) {}

  // Counts a query; true when the prefix was seen recently. Always records it.
  bool lookup_and_insert(std::string_view prompt);

  uint64_t hits() const { return hits_; }
  uint64_t queries() const { return queries_; }
  size_t size() const { return lru_.size(); }
  void reset_counters() { hits_ = queries_ = 0; }

 private:
  size_t capacity_;
  size_t prefix_bytes_;
  std::list<uint64_t> lru_;  // front = most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> index_;
  uint64_t hits_ = 0;
  uint64_t queries_ = 0;
};

}  // namespace npc_scale::fake_gpu
