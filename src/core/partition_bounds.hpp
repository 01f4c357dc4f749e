// Time-partition bounds and names, pg_partman-compatible, on UTC civil time.
//
// Everything here is pure calendar arithmetic on UTC: a day is always 86400 s
// and there is no DST. Zone-local partitioning is the SQL side's job: it turns
// a zone-local wall time into "UTC-shaped" seconds (extract(epoch from
// ts AT TIME ZONE zone), i.e. the local wall clock read as if it were UTC),
// calls these functions, and converts the resulting bounds back with
// AT TIME ZONE. That keeps month/day boundaries at local midnight across DST.
//
// Naming follows pg_partman 4.7 (Debian postgresql-15-partman):
// create_parent() builds a to_char() pattern per interval and the child is
// parent || '_p' || to_char(start, pattern). partition_suffix() returns
// 'p' || to_char(...), so the child name is parent + "_" + suffix.
//   year   'YYYY'          -> p2026
//   month  'YYYY_MM'       -> p2026_11
//   week   'IYYY"w"IW'     -> p2026w01   (ISO year and week; weeks start Monday)
//   day    'YYYY_MM_DD'    -> p2026_11_28
//   fixed  < 1 day         'YYYY_MM_DD_HH24MI' (+ 'SS' when < 1 minute)
//          >= 1 day        'YYYY_MM_DD'. Deviation: pg_partman switches to
//          'YYYY_MM' / 'YYYY' for custom intervals >= 30 / 360 days, which can
//          give two partitions one name (e.g. 30-day partitions starting Jan 1
//          and Jan 31); day granularity never collides for intervals >= 1 day.
// Years are limited to 0001..9999 so every suffix is fixed-width and sorts as
// text in time order.
#pragma once

#include <cstdint>
#include <string>

namespace npc_scale {

// ---- UTC civil-time helpers (shared with cron.cpp) -------------------------

// Supported instants: 0001-01-01 00:00:00 .. 9999-12-31 23:59:59 UTC. Keeps
// the arithmetic far from int64 overflow and the names fixed-width.
inline constexpr int64_t kMinEpochSeconds = -62135596800LL;
inline constexpr int64_t kMaxEpochSeconds = 253402300799LL;

struct CivilTime {
  int year = 1970;
  int month = 1;  // 1..12
  int day = 1;    // 1..days_in_month
  int hour = 0;
  int minute = 0;
  int second = 0;
};

bool is_leap_year(int year);             // Gregorian: 2024 yes, 2100 no, 2000 yes
int days_in_month(int year, int month);  // month 1..12
int64_t days_from_civil(int year, int month, int day);  // days since 1970-01-01
CivilTime civil_from_epoch(int64_t epoch_s);            // floor semantics for negatives
int64_t epoch_from_civil(const CivilTime& t);           // fields must be in range
int day_of_week(int64_t epoch_s);                       // 0 = Sunday .. 6 = Saturday

// Calendar-month step like Postgres `ts + n * interval '1 month'`: the day is
// clamped to the target month's length (Jan 31 + 1 month = Feb 28/29) and the
// time of day is kept. n may be negative. Throws outside the supported range.
int64_t add_calendar_months(int64_t epoch_s, int64_t months);
// Fixed step: epoch_s + n * seconds, range-checked.
int64_t add_fixed_interval(int64_t epoch_s, int64_t seconds, int64_t n);

// ---- partitions ---------------------------------------------------------------

enum class PartitionUnit { day, week, month, year, fixed };  // fixed = any fixed interval in seconds

struct PartitionInterval {
  PartitionUnit unit;
  int64_t fixed_seconds = 0;  // only for fixed; > 0
};

inline bool operator==(const PartitionInterval& a, const PartitionInterval& b) {
  return a.unit == b.unit && a.fixed_seconds == b.fixed_seconds;
}

// From a Postgres interval's fields (Interval.month/.day/.time):
//   1 mon -> month; 12 mon (1 year) -> year; 1 day -> day; 7 days -> week;
//   any other pure days+time of whole seconds -> fixed (e.g. '6 hours',
//   '24 hours', '2 weeks'). Throws for other month counts ('3 mons'), months
//   mixed with days/time, negative parts, sub-second parts, or zero.
PartitionInterval classify_interval(int months, int days, int64_t microseconds);

// Start of the partition containing epoch_s: day start, ISO-week Monday 00:00,
// month start, year start; fixed intervals are multiples of the interval from
// 1970-01-01 00:00 UTC, except whole-week multiples, which count from Monday
// 1970-01-05 so that e.g. 2-week partitions start on Mondays.
int64_t floor_to_partition(int64_t epoch_s, const PartitionInterval& iv);

// start + n intervals (n may be negative); months/years via add_calendar_months.
int64_t add_partitions(int64_t start_epoch_s, const PartitionInterval& iv, int n);

// pg_partman 4.7 suffix for the partition starting at start_epoch_s (see top).
std::string partition_suffix(int64_t start_epoch_s, const PartitionInterval& iv);

// "day", "week", "month", "year", or "fixed 21600s" — for messages.
std::string describe(const PartitionInterval& iv);

}  // namespace npc_scale
