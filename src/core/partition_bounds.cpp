#include "partition_bounds.hpp"

#include <cstdio>

#include "error.hpp"

namespace npc_scale {

namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kWeek = 7 * kDay;
// 1970-01-05 was a Monday: origin for ISO weeks.
constexpr int64_t kFirstMonday = 4 * kDay;

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

[[noreturn]] void bad(const std::string& msg) {
  throw Error(sqlstate::invalid_parameter_value, msg);
}

void check_range(int64_t epoch_s, const char* what) {
  if (epoch_s < kMinEpochSeconds || epoch_s > kMaxEpochSeconds) {
    bad(std::string(what) + " " + std::to_string(epoch_s) +
        " is outside the supported range (years 0001-9999 UTC)");
  }
}

}  // namespace

bool is_leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
  static const int kLen[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return (m == 2 && is_leap_year(y)) ? 29 : kLen[m - 1];
}

// Era-based conversion (400-year cycles), valid for any proleptic Gregorian date.
int64_t days_from_civil(int year, int month, int day) {
  const int64_t y = static_cast<int64_t>(year) - (month <= 2 ? 1 : 0);
  const int64_t era = floor_div(y, 400);
  const int64_t yoe = y - era * 400;                                         // [0, 399]
  const int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;  // [0, 365]
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;                 // [0, 146096]
  return era * 146097 + doe - 719468;
}

CivilTime civil_from_epoch(int64_t epoch_s) {
  const int64_t days = floor_div(epoch_s, kDay);
  const int64_t secs = epoch_s - days * kDay;
  const int64_t z = days + 719468;
  const int64_t era = floor_div(z, 146097);
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  CivilTime t;
  t.day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  t.month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  t.year = static_cast<int>(yoe + era * 400 + (t.month <= 2 ? 1 : 0));
  t.hour = static_cast<int>(secs / 3600);
  t.minute = static_cast<int>(secs % 3600 / 60);
  t.second = static_cast<int>(secs % 60);
  return t;
}

int64_t epoch_from_civil(const CivilTime& t) {
  return days_from_civil(t.year, t.month, t.day) * kDay + t.hour * 3600 + t.minute * 60 +
         t.second;
}

int day_of_week(int64_t epoch_s) {
  // 1970-01-01 was a Thursday (4).
  return static_cast<int>(((floor_div(epoch_s, kDay) + 4) % 7 + 7) % 7);
}

int64_t add_calendar_months(int64_t epoch_s, int64_t months) {
  check_range(epoch_s, "timestamp");
  // Anything beyond +-10000 years is out of range anyway; bounding it first
  // keeps the month arithmetic below from overflowing.
  if (months > 120000 || months < -120000) {
    bad("month step " + std::to_string(months) + " is outside the supported range");
  }
  CivilTime t = civil_from_epoch(epoch_s);
  const int64_t index = static_cast<int64_t>(t.year) * 12 + (t.month - 1) + months;
  const int64_t year = floor_div(index, 12);
  if (year < 1 || year > 9999) {
    bad("timestamp " + std::to_string(epoch_s) + " plus " + std::to_string(months) +
        " months is outside the supported range (years 0001-9999 UTC)");
  }
  t.year = static_cast<int>(year);
  t.month = static_cast<int>(index - year * 12 + 1);
  const int len = days_in_month(t.year, t.month);
  if (t.day > len) t.day = len;  // clamp like Postgres: Jan 31 + 1 month = Feb 28/29
  return epoch_from_civil(t);
}

int64_t add_fixed_interval(int64_t epoch_s, int64_t seconds, int64_t n) {
  check_range(epoch_s, "timestamp");
  int64_t delta = 0;
  int64_t result = 0;
  if (__builtin_mul_overflow(seconds, n, &delta) ||
      __builtin_add_overflow(epoch_s, delta, &result) || result < kMinEpochSeconds ||
      result > kMaxEpochSeconds) {
    bad("timestamp " + std::to_string(epoch_s) + " plus " + std::to_string(n) + " x " +
        std::to_string(seconds) + "s is outside the supported range (years 0001-9999 UTC)");
  }
  return result;
}

PartitionInterval classify_interval(int months, int days, int64_t microseconds) {
  const std::string shown = std::to_string(months) + " mons " + std::to_string(days) +
                            " days " + std::to_string(microseconds) + " us";
  if (months < 0 || days < 0 || microseconds < 0) {
    bad("partition interval (" + shown + ") must not have negative parts");
  }
  if (months != 0) {
    if (days != 0 || microseconds != 0) {
      // A month's length varies, so months + days has no fixed partition grid.
      bad("partition interval (" + shown + ") mixes months with days or time");
    }
    if (months == 1) return {PartitionUnit::month, 0};
    if (months == 12) return {PartitionUnit::year, 0};
    bad("partition interval of " + std::to_string(months) +
        " months is not supported: use 1 month or 1 year");
  }
  if (microseconds == 0 && days == 1) return {PartitionUnit::day, 0};
  if (microseconds == 0 && days == 7) return {PartitionUnit::week, 0};
  if (microseconds % 1000000 != 0) {
    bad("partition interval (" + shown + ") must be a whole number of seconds");
  }
  const int64_t seconds = static_cast<int64_t>(days) * kDay + microseconds / 1000000;
  if (seconds <= 0) bad("partition interval (" + shown + ") must be positive");
  return {PartitionUnit::fixed, seconds};
}

int64_t floor_to_partition(int64_t epoch_s, const PartitionInterval& iv) {
  check_range(epoch_s, "timestamp");
  switch (iv.unit) {
    case PartitionUnit::day:
      return floor_div(epoch_s, kDay) * kDay;
    case PartitionUnit::week:
      return floor_div(epoch_s - kFirstMonday, kWeek) * kWeek + kFirstMonday;
    case PartitionUnit::month: {
      const CivilTime t = civil_from_epoch(epoch_s);
      return days_from_civil(t.year, t.month, 1) * kDay;
    }
    case PartitionUnit::year:
      return days_from_civil(civil_from_epoch(epoch_s).year, 1, 1) * kDay;
    case PartitionUnit::fixed: {
      const int64_t s = iv.fixed_seconds;
      if (s <= 0) bad("fixed partition interval " + std::to_string(s) + "s must be positive");
      const int64_t origin = (s % kWeek == 0) ? kFirstMonday : 0;
      const int64_t start = floor_div(epoch_s - origin, s) * s + origin;
      // Intervals longer than the supported span can floor below year 0001.
      check_range(start, "partition start");
      return start;
    }
  }
  bad("unknown partition unit");
}

int64_t add_partitions(int64_t start_epoch_s, const PartitionInterval& iv, int n) {
  switch (iv.unit) {
    case PartitionUnit::day:
      return add_fixed_interval(start_epoch_s, kDay, n);
    case PartitionUnit::week:
      return add_fixed_interval(start_epoch_s, kWeek, n);
    case PartitionUnit::month:
      return add_calendar_months(start_epoch_s, n);
    case PartitionUnit::year:
      return add_calendar_months(start_epoch_s, static_cast<int64_t>(n) * 12);
    case PartitionUnit::fixed:
      if (iv.fixed_seconds <= 0) {
        bad("fixed partition interval " + std::to_string(iv.fixed_seconds) +
            "s must be positive");
      }
      return add_fixed_interval(start_epoch_s, iv.fixed_seconds, n);
  }
  bad("unknown partition unit");
}

std::string partition_suffix(int64_t start_epoch_s, const PartitionInterval& iv) {
  check_range(start_epoch_s, "partition start");
  if (iv.unit == PartitionUnit::fixed && iv.fixed_seconds <= 0) {
    bad("fixed partition interval " + std::to_string(iv.fixed_seconds) + "s must be positive");
  }
  const CivilTime t = civil_from_epoch(start_epoch_s);
  char buf[40] = "";
  switch (iv.unit) {
    case PartitionUnit::year:
      std::snprintf(buf, sizeof buf, "p%04d", t.year);
      break;
    case PartitionUnit::month:
      std::snprintf(buf, sizeof buf, "p%04d_%02d", t.year, t.month);
      break;
    case PartitionUnit::week: {
      // ISO week-numbering year/week = those of the Thursday of this week.
      const int64_t days = floor_div(start_epoch_s, kDay);
      const int64_t thursday = days - (((days - 4) % 7 + 7) % 7) + 3;
      const CivilTime th = civil_from_epoch(thursday * kDay);
      const int64_t week = (thursday - days_from_civil(th.year, 1, 1)) / 7 + 1;
      if (th.year < 1 || th.year > 9999) bad("partition start is outside years 0001-9999");
      std::snprintf(buf, sizeof buf, "p%04dw%02d", th.year, static_cast<int>(week));
      break;
    }
    case PartitionUnit::day:
      std::snprintf(buf, sizeof buf, "p%04d_%02d_%02d", t.year, t.month, t.day);
      break;
    case PartitionUnit::fixed:
      if (iv.fixed_seconds >= kDay) {
        std::snprintf(buf, sizeof buf, "p%04d_%02d_%02d", t.year, t.month, t.day);
      } else if (iv.fixed_seconds >= 60) {
        std::snprintf(buf, sizeof buf, "p%04d_%02d_%02d_%02d%02d", t.year, t.month, t.day,
                      t.hour, t.minute);
      } else {
        std::snprintf(buf, sizeof buf, "p%04d_%02d_%02d_%02d%02d%02d", t.year, t.month, t.day,
                      t.hour, t.minute, t.second);
      }
      break;
  }
  return buf;
}

std::string describe(const PartitionInterval& iv) {
  switch (iv.unit) {
    case PartitionUnit::day: return "day";
    case PartitionUnit::week: return "week";
    case PartitionUnit::month: return "month";
    case PartitionUnit::year: return "year";
    case PartitionUnit::fixed: return "fixed " + std::to_string(iv.fixed_seconds) + "s";
  }
  return "unknown";
}

}  // namespace npc_scale
