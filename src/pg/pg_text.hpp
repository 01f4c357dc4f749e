// Small, guarded conversions between Postgres datums and C++ strings.
#pragma once

#include <string>

#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
}

namespace npc_scale {

// text datum → std::string (detoasting under pg_call).
inline std::string text_arg(Datum d) {
  return pg_call([&] {
    text* t = DatumGetTextPP(d);
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
  });
}

// jsonb datum → its JSON text.
inline std::string jsonb_arg(Datum d) {
  char* s = pg_call([&] {
    Jsonb* jb = DatumGetJsonbP(d);
    return JsonbToCString(nullptr, &jb->root, VARSIZE(jb));
  });
  std::string out(s);  // outside pg_call: no C++ object lives across a Postgres call there
  pg_call([&] { pfree(s); });
  return out;
}

// An interval argument in seconds; months count as 30 days, as in
// Postgres's own extract(epoch FROM interval).
inline double interval_arg_seconds(FunctionCallInfo fcinfo, int arg) {
  Interval* iv = pg_call([&] { return PG_GETARG_INTERVAL_P(arg); });
  return iv->time / 1e6 + (iv->day + iv->month * 30.0) * 86400.0;
}

// The seconds an interval argument adds to the transaction's now(), months as
// the calendar has them (what now() + interval gives a row): '1 mon -29 days'
// is a day in most months and a day in the past after a 28-day February.
// Call it on an interval already bounded (no overflow).
inline double interval_arg_seconds_from_now(FunctionCallInfo fcinfo, int arg) {
  return pg_call([&] {
    TimestampTz now = GetCurrentTransactionStartTimestamp();
    Datum later = DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(now), PG_GETARG_DATUM(arg));
    return static_cast<double>(DatumGetTimestampTz(later) - now) / 1e6;
  });
}

inline Datum text_datum(const std::string& s) {
  return pg_call([&] { return PointerGetDatum(cstring_to_text_with_len(s.data(), s.size())); });
}

}  // namespace npc_scale
