// pg_cron-compatible schedules for the maintenance worker, so jobs written for
// pg_cron keep their meaning here.
//
// Accepted (as in pg_cron's src/entry.c, derived from Vixie cron, and
// src/job_metadata.c):
//   - five fields: minute(0-59) hour(0-23) day-of-month(1-31) month(1-12)
//     day-of-week(0-7, 0 and 7 = Sunday), separated by blanks;
//   - per field: '*', 'N', 'a-b', '*/n', 'a-b/n', and comma lists of those;
//     month names jan..dec and day names sun..sat, case-insensitive, usable
//     wherever a number is (e.g. 'mon-fri');
//   - '$' alone as day-of-month = last day of the month (pg_cron extension);
//   - @yearly @annually @monthly @weekly @daily @midnight @hourly;
//   - 'N seconds' / 'N second' with N = 1..59 (interval schedules).
// Rejected although pg_cron accepts them:
//   - @reboot / @restart: they mean "once when the scheduler starts", which
//     has no next_run() time; restarting our worker must not re-run jobs.
//   - text after the fifth field (Vixie treats it as the command; here it is
//     a typo), reversed ranges ('5-1', which Vixie turns into an empty set),
//     '*' inside a list ('*,5'), and schedules that never fire ('0 0 30 2 *').
// Rejected like pg_cron: a step without a range ('5/15'), step 0, a step
// larger than the field's maximum ('*/60' minutes).
// Shortcuts are matched case-insensitively (pg_cron: lower case only).
//
// Day matching follows Vixie cron/pg_cron (cron.match_dom_and_dow = off):
// when day-of-month and day-of-week are both restricted, a day matches if
// EITHER matches; if either field begins with '*' (including '*/n'), both
// must match.
#pragma once

#include <cstdint>
#include <string>

namespace npc_scale {

// Parsed schedule. Build it with parse_cron(); fields are bit sets.
struct CronSchedule {
  int interval_seconds = 0;        // 1..59 for an 'N seconds' schedule; 0 otherwise
  uint64_t minutes = 0;            // bit m: minute m (0-59)
  uint32_t hours = 0;              // bit h: hour h (0-23)
  uint32_t days_of_month = 0;      // bit d: day d (1-31)
  uint16_t months = 0;             // bit m: month m (1-12)
  uint8_t days_of_week = 0;        // bit d: 0 = Sunday .. 6 = Saturday (input 7 folds to 0)
  bool last_day_of_month = false;  // '$'
  bool dom_star = false;           // day-of-month field began with '*'
  bool dow_star = false;           // day-of-week field began with '*'
};

bool operator==(const CronSchedule& a, const CronSchedule& b);
inline bool operator!=(const CronSchedule& a, const CronSchedule& b) { return !(a == b); }

// Throws Error(invalid_parameter_value) naming the text and the bad field/value.
CronSchedule parse_cron(const std::string& text);

bool is_interval_schedule(const CronSchedule& s);  // 'N seconds'

// Next run strictly after `after_epoch_s` (UTC seconds). Cron schedules are
// evaluated in UTC, like pg_cron with its default cron.timezone = 'GMT', and
// fire on whole minutes. Interval schedules return after + N. Throws if the
// answer would fall outside years 0001-9999.
int64_t next_run(const CronSchedule& s, int64_t after_epoch_s);

// Canonical text for the jobs table: numbers instead of names, Sunday as 0,
// shortcuts expanded ('@daily' -> '0 0 * * *'), lists compressed to ranges,
// 'N seconds' (or '1 second'). parse_cron(describe(s)) == s.
std::string describe(const CronSchedule& s);

}  // namespace npc_scale
