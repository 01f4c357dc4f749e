// npc_scale._partition_bounds(interval, around, before, after): the time
// partitions covering `around` plus `before` intervals back and `after`
// ahead — names (pg_partman-compatible suffixes) and bounds — computed by
// src/core/partition_bounds in UTC, so the result never depends on the
// session's TimeZone.
#include <string>
#include <vector>

#include "core/partition_bounds.hpp"
#include "guard.hpp"
#include "pg_text.hpp"

extern "C" {
#include "funcapi.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

namespace {
constexpr int64_t kPgEpochOffsetS = 946684800;  // 2000-01-01 in Unix seconds

int64_t to_unix(TimestampTz t) {
  int64_t s = t / USECS_PER_SEC;
  if (t < 0 && t % USECS_PER_SEC != 0) s -= 1;
  return s + kPgEpochOffsetS;
}
TimestampTz to_pg(int64_t unix_s) { return (unix_s - kPgEpochOffsetS) * USECS_PER_SEC; }
}  // namespace

NPC_SQL_FUNCTION(npc_scale_partition_bounds) {
  using namespace npc_scale;
  Interval* iv = pg_call([&] { return PG_GETARG_INTERVAL_P(0); });
  TimestampTz around = PG_GETARG_TIMESTAMPTZ(1);
  int before = PG_GETARG_INT32(2);
  int after = PG_GETARG_INT32(3);
  if (before < 0 || after < 0 || static_cast<int64_t>(before) + after > 10000) {
    throw Error(sqlstate::invalid_parameter_value,
                "partition counts before=" + std::to_string(before) + ", after=" +
                    std::to_string(after) + " are out of range");
  }
  PartitionInterval unit = classify_interval(iv->month, iv->day, iv->time);
  int64_t first = add_partitions(floor_to_partition(to_unix(around), unit), unit, -before);
  struct Row {
    std::string suffix;
    int64_t lower, upper;
  };
  std::vector<Row> rows;
  int64_t lower = first;
  for (int i = 0; i <= before + after; i++) {
    int64_t upper = add_partitions(lower, unit, 1);
    rows.push_back({partition_suffix(lower, unit), lower, upper});
    lower = upper;
  }
  pg_call([&] {
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    for (const Row& r : rows) {
      Datum v[3] = {CStringGetTextDatum(r.suffix.c_str()), TimestampTzGetDatum(to_pg(r.lower)),
                    TimestampTzGetDatum(to_pg(r.upper))};
      bool nulls[3] = {false, false, false};
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
    }
  });
  return (Datum)0;
}
