// npc_scale._endpoint_stats(): the dispatcher's live view of each GPU
// endpoint, copied out of shared memory (published every 100 ms). The view
// npc_scale.endpoint_stats joins it with gpu_endpoints — never the api_key.
#include <algorithm>
#include <vector>

#include "guard.hpp"
#include "shared_state.hpp"

extern "C" {
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

NPC_SQL_FUNCTION(npc_scale_endpoint_stats) {
  using namespace npc_scale;
  SharedState& s = shared_state();
  // Sized before the spinlock: nothing under it may allocate (a throw there
  // would leave the lock held for good).
  std::vector<EndpointStat> stats(kMaxEndpointStats);
  SpinLockAcquire(&s.stats_mutex);
  int n = std::min(s.endpoint_stat_count, kMaxEndpointStats);
  std::copy(s.endpoint_stats, s.endpoint_stats + n, stats.begin());
  SpinLockRelease(&s.stats_mutex);
  stats.resize(n);

  pg_call([&] {
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    static const char* kBreaker[] = {"closed", "open", "half_open"};
    for (const EndpointStat& st : stats) {
      Datum v[16];
      bool nulls[16] = {false};
      v[0] = Int32GetDatum(st.gpu_id);
      v[1] = BoolGetDatum(st.draining);
      v[2] = CStringGetTextDatum(kBreaker[st.breaker < 0 || st.breaker > 2 ? 0 : st.breaker]);
      v[3] = Int32GetDatum(st.in_flight);
      v[4] = Int32GetDatum(st.max_concurrent);
      v[5] = Int64GetDatum(st.requests);
      v[6] = Int64GetDatum(st.errors);
      v[7] = Float8GetDatum(st.error_rate);
      v[8] = Float8GetDatum(st.ema_ms);
      v[9] = Float8GetDatum(st.p50_ms);
      v[10] = Float8GetDatum(st.p99_ms);
      v[11] = Int32GetDatum(st.remote_running);
      nulls[11] = st.remote_running < 0;
      v[12] = Int32GetDatum(st.remote_waiting);
      nulls[12] = st.remote_waiting < 0;
      v[13] = CStringGetTextDatum(st.last_error);
      nulls[13] = st.last_error[0] == '\0';
      v[14] = TimestampTzGetDatum(st.last_error_at);
      nulls[14] = st.last_error_at == 0;
      v[15] = Int32GetDatum(st.endpoint_hash);
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
    }
  });
  return (Datum)0;
}
