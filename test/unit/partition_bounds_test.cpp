// Time-partition bounds: interval classification, floors at calendar starts,
// calendar-correct stepping, and pg_partman 4.7 suffixes that sort as text.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "error.hpp"
#include "partition_bounds.hpp"

using namespace npc_scale;

namespace {

constexpr int64_t kUs = 1000000;
constexpr int64_t kDaySec = 86400;

int64_t T(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return epoch_from_civil({y, mo, d, h, mi, s});
}

const PartitionInterval kDayIv{PartitionUnit::day, 0};
const PartitionInterval kWeekIv{PartitionUnit::week, 0};
const PartitionInterval kMonthIv{PartitionUnit::month, 0};
const PartitionInterval kYearIv{PartitionUnit::year, 0};
PartitionInterval fixed(int64_t s) { return {PartitionUnit::fixed, s}; }

template <typename F>
void expect_bad(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

// ---- civil-time helpers -------------------------------------------------------

TEST(CivilTime, KnownInstants) {
  EXPECT_EQ(T(1970, 1, 1), 0);
  EXPECT_EQ(T(2026, 1, 1), 1767225600);
  EXPECT_EQ(T(2028, 2, 29), 1835395200);
  EXPECT_EQ(T(2000, 3, 1), 951868800);
  EXPECT_EQ(T(1969, 12, 31), -86400);
  EXPECT_EQ(T(1, 1, 1), kMinEpochSeconds);
  EXPECT_EQ(T(9999, 12, 31, 23, 59, 59), kMaxEpochSeconds);
  EXPECT_EQ(day_of_week(0), 4);                // Thursday
  EXPECT_EQ(day_of_week(T(2025, 12, 29)), 1);  // Monday
  EXPECT_EQ(day_of_week(-1), 3);               // Wednesday 1969-12-31
}

TEST(CivilTime, RoundTripsAcrossTheWholeRange) {
  for (int64_t t = kMinEpochSeconds; t <= kMaxEpochSeconds; t += 86400 * 37 + 3607) {
    const CivilTime c = civil_from_epoch(t);
    ASSERT_EQ(epoch_from_civil(c), t);
    ASSERT_GE(c.day, 1);
    ASSERT_LE(c.day, days_in_month(c.year, c.month));
  }
}

TEST(CivilTime, LeapYears) {
  EXPECT_TRUE(is_leap_year(2024));
  EXPECT_TRUE(is_leap_year(2000));
  EXPECT_FALSE(is_leap_year(2100));
  EXPECT_FALSE(is_leap_year(2025));
  EXPECT_EQ(days_in_month(2024, 2), 29);
  EXPECT_EQ(days_in_month(2100, 2), 28);
  EXPECT_EQ(days_in_month(2000, 2), 29);
  EXPECT_EQ(days_in_month(2026, 4), 30);
  EXPECT_EQ(days_in_month(2026, 12), 31);
}

// ---- classify_interval --------------------------------------------------------

TEST(ClassifyInterval, CalendarUnits) {
  EXPECT_EQ(classify_interval(1, 0, 0), kMonthIv);
  EXPECT_EQ(classify_interval(12, 0, 0), kYearIv);  // '1 year' is stored as 12 months
  EXPECT_EQ(classify_interval(0, 1, 0), kDayIv);
  EXPECT_EQ(classify_interval(0, 7, 0), kWeekIv);
}

TEST(ClassifyInterval, FixedIntervals) {
  EXPECT_EQ(classify_interval(0, 0, 6 * 3600 * kUs), fixed(6 * 3600));
  EXPECT_EQ(classify_interval(0, 0, 24 * 3600 * kUs), fixed(86400));  // '24 hours' is not '1 day'
  EXPECT_EQ(classify_interval(0, 14, 0), fixed(14 * 86400));
  EXPECT_EQ(classify_interval(0, 1, 3600 * kUs), fixed(90000));
  EXPECT_EQ(classify_interval(0, 0, kUs), fixed(1));
}

TEST(ClassifyInterval, Rejects) {
  expect_bad([] { classify_interval(1, 1, 0); }, "1 mons 1 days 0 us");
  expect_bad([] { classify_interval(1, 0, 3600 * kUs); }, "mixes months");
  expect_bad([] { classify_interval(0, 0, 0); }, "must be positive");
  expect_bad([] { classify_interval(-1, 0, 0); }, "-1 mons");
  expect_bad([] { classify_interval(0, -1, 0); }, "-1 days");
  expect_bad([] { classify_interval(0, 0, -kUs); }, "-1000000 us");
  expect_bad([] { classify_interval(3, 0, 0); }, "3 months is not supported");
  expect_bad([] { classify_interval(0, 0, 1500000); }, "1500000 us");
}

// ---- floor_to_partition -------------------------------------------------------

TEST(FloorToPartition, InsideAndAtBoundaries) {
  const int64_t t = T(2026, 11, 28, 13, 45, 12);
  EXPECT_EQ(floor_to_partition(t, kDayIv), T(2026, 11, 28));
  EXPECT_EQ(floor_to_partition(t, kMonthIv), T(2026, 11, 1));
  EXPECT_EQ(floor_to_partition(t, kYearIv), T(2026, 1, 1));
  EXPECT_EQ(floor_to_partition(t, kWeekIv), T(2026, 11, 23));  // Saturday -> Monday
  for (const auto& iv : {kDayIv, kWeekIv, kMonthIv, kYearIv}) {
    const int64_t start = floor_to_partition(t, iv);
    EXPECT_EQ(floor_to_partition(start, iv), start) << describe(iv);         // exactly at
    EXPECT_EQ(floor_to_partition(start - 1, iv), add_partitions(start, iv, -1)) << describe(iv);
  }
  EXPECT_EQ(floor_to_partition(T(2026, 12, 31, 23, 59, 59), kMonthIv), T(2026, 12, 1));
  EXPECT_EQ(floor_to_partition(T(2024, 2, 29, 23, 59, 59), kMonthIv), T(2024, 2, 1));
}

TEST(FloorToPartition, IsoWeeksStartOnMonday) {
  EXPECT_EQ(floor_to_partition(T(2025, 12, 31, 12), kWeekIv), T(2025, 12, 29));
  EXPECT_EQ(floor_to_partition(T(2026, 1, 4, 23, 59, 59), kWeekIv), T(2025, 12, 29));  // Sunday
  EXPECT_EQ(floor_to_partition(T(2026, 1, 5), kWeekIv), T(2026, 1, 5));                 // Monday
  EXPECT_EQ(floor_to_partition(0, kWeekIv), T(1969, 12, 29));  // before the first Monday
}

TEST(FloorToPartition, FixedIntervals) {
  const auto six_h = fixed(6 * 3600);
  EXPECT_EQ(floor_to_partition(T(2026, 11, 28, 13, 45), six_h), T(2026, 11, 28, 12));
  EXPECT_EQ(floor_to_partition(T(2026, 11, 28, 18), six_h), T(2026, 11, 28, 18));
  EXPECT_EQ(floor_to_partition(T(2026, 11, 28, 17, 59, 59), six_h), T(2026, 11, 28, 12));
  EXPECT_EQ(floor_to_partition(T(2026, 11, 28, 0, 7, 31), fixed(30)), T(2026, 11, 28, 0, 7, 30));
  // Whole weeks count from a Monday, not from Thursday 1970-01-01.
  const int64_t two_weeks = floor_to_partition(T(2026, 11, 28), fixed(14 * 86400));
  EXPECT_EQ(day_of_week(two_weeks), 1);
  EXPECT_LE(two_weeks, T(2026, 11, 28));
  EXPECT_GT(two_weeks + 14 * 86400, T(2026, 11, 28));
  // Negative epochs floor downwards.
  EXPECT_EQ(floor_to_partition(T(1969, 12, 31, 12), kDayIv), T(1969, 12, 31));
  EXPECT_EQ(floor_to_partition(T(1969, 12, 31, 12), six_h), T(1969, 12, 31, 12));
  EXPECT_EQ(floor_to_partition(T(1969, 12, 31, 11), six_h), T(1969, 12, 31, 6));
}

TEST(FloorToPartition, RejectsOutOfRange) {
  expect_bad([] { floor_to_partition(kMaxEpochSeconds + 1, kDayIv); }, "253402300800");
  expect_bad([] { floor_to_partition(0, fixed(0)); }, "0s must be positive");
}

// ---- add_partitions ------------------------------------------------------------

TEST(AddPartitions, MonthsAreCalendarMonths) {
  EXPECT_EQ(add_partitions(T(2026, 1, 1), kMonthIv, 1), T(2026, 2, 1));
  EXPECT_EQ(add_partitions(T(2026, 1, 1), kMonthIv, 2), T(2026, 3, 1));
  EXPECT_EQ(add_partitions(T(2026, 1, 1), kMonthIv, -1), T(2025, 12, 1));
  EXPECT_EQ(add_partitions(T(2026, 1, 1), kMonthIv, -13), T(2024, 12, 1));
  EXPECT_EQ(add_partitions(T(2026, 11, 1), kMonthIv, 14), T(2028, 1, 1));
  // Month lengths fall out of calendar stepping.
  EXPECT_EQ(add_partitions(T(2024, 2, 1), kMonthIv, 1) - T(2024, 2, 1), 29 * kDaySec);
  EXPECT_EQ(add_partitions(T(2025, 2, 1), kMonthIv, 1) - T(2025, 2, 1), 28 * kDaySec);
  EXPECT_EQ(add_partitions(T(2100, 2, 1), kMonthIv, 1) - T(2100, 2, 1), 28 * kDaySec);
  EXPECT_EQ(add_partitions(T(2000, 2, 1), kMonthIv, 1) - T(2000, 2, 1), 29 * kDaySec);
}

TEST(AddPartitions, MonthEndsClampLikePostgres) {
  // Postgres: '2025-01-31'::timestamp + interval '1 month' = 2025-02-28.
  EXPECT_EQ(add_calendar_months(T(2025, 1, 31, 10, 30), 1), T(2025, 2, 28, 10, 30));
  EXPECT_EQ(add_calendar_months(T(2024, 1, 31), 1), T(2024, 2, 29));
  // One step of 2 months is not two steps of 1 (Mar 31 vs Mar 28), as in Postgres.
  EXPECT_EQ(add_partitions(T(2025, 1, 31), kMonthIv, 2), T(2025, 3, 31));
  EXPECT_EQ(add_partitions(add_partitions(T(2025, 1, 31), kMonthIv, 1), kMonthIv, 1),
            T(2025, 3, 28));
  EXPECT_EQ(add_calendar_months(T(2025, 3, 31), -1), T(2025, 2, 28));
  // Aligned starts never clamp: Jan -> Feb -> Mar via floors.
  EXPECT_EQ(floor_to_partition(T(2025, 1, 31), kMonthIv), T(2025, 1, 1));
  EXPECT_EQ(add_partitions(floor_to_partition(T(2025, 1, 31), kMonthIv), kMonthIv, 1),
            T(2025, 2, 1));
}

TEST(AddPartitions, YearsAndLeapDays) {
  EXPECT_EQ(add_partitions(T(2026, 1, 1), kYearIv, 1), T(2027, 1, 1));
  EXPECT_EQ(add_partitions(T(2026, 1, 1), kYearIv, -3), T(2023, 1, 1));
  EXPECT_EQ(add_partitions(T(2024, 1, 1), kYearIv, 1) - T(2024, 1, 1), 366 * kDaySec);
  EXPECT_EQ(add_partitions(T(2100, 1, 1), kYearIv, 1) - T(2100, 1, 1), 365 * kDaySec);
  EXPECT_EQ(add_partitions(T(2024, 2, 29), kYearIv, 1), T(2025, 2, 28));
  EXPECT_EQ(add_partitions(T(2024, 2, 29), kYearIv, 4), T(2028, 2, 29));
}

TEST(AddPartitions, DaysWeeksAndFixed) {
  EXPECT_EQ(add_partitions(T(2026, 12, 31), kDayIv, 1), T(2027, 1, 1));
  EXPECT_EQ(add_partitions(T(2026, 3, 1), kDayIv, -1), T(2026, 2, 28));
  EXPECT_EQ(add_partitions(T(2024, 3, 1), kDayIv, -1), T(2024, 2, 29));
  EXPECT_EQ(add_partitions(T(2025, 12, 29), kWeekIv, 1), T(2026, 1, 5));
  EXPECT_EQ(add_partitions(T(2025, 12, 29), kWeekIv, -52), T(2024, 12, 30));
  EXPECT_EQ(add_partitions(T(2026, 11, 28, 18), fixed(6 * 3600), 1), T(2026, 11, 29));
  EXPECT_EQ(add_partitions(T(2026, 11, 28), fixed(6 * 3600), -5), T(2026, 11, 26, 18));
  EXPECT_EQ(add_fixed_interval(T(2026, 1, 1), 90, 4), T(2026, 1, 1, 0, 6));
}

TEST(AddPartitions, StepsStayOnTheGrid) {
  for (const auto& iv : {kDayIv, kWeekIv, kMonthIv, kYearIv, fixed(6 * 3600), fixed(14 * 86400)}) {
    int64_t start = floor_to_partition(T(2023, 7, 19, 5, 4, 3), iv);
    for (int i = 0; i < 60; ++i) {
      const int64_t next = add_partitions(start, iv, 1);
      ASSERT_GT(next, start) << describe(iv);
      ASSERT_EQ(floor_to_partition(next, iv), next) << describe(iv);
      ASSERT_EQ(floor_to_partition(next - 1, iv), start) << describe(iv);
      ASSERT_EQ(add_partitions(next, iv, -1), start) << describe(iv);
      start = next;
    }
  }
}

TEST(AddPartitions, RejectsOutOfRange) {
  expect_bad([] { add_partitions(T(9999, 12, 1), kMonthIv, 1); }, "outside the supported range");
  expect_bad([] { add_partitions(T(1, 1, 1), kDayIv, -1); }, "outside the supported range");
  expect_bad([] { add_partitions(0, fixed(kMaxEpochSeconds), 2000000000); },
             "outside the supported range");
  expect_bad([] { add_fixed_interval(0, INT64_MAX, 2); }, "outside the supported range");
  expect_bad([] { add_calendar_months(0, INT64_MIN); }, "month step");
}

// UTC math has no DST: the SQL side converts zone-local wall times to
// UTC-shaped seconds before calling and converts the bounds back, so local
// partitions start at local midnight whatever the offset that day.
TEST(AddPartitions, PureCalendarMathIgnoresDst) {
  // 2026-03-08 is the US spring-forward day and 2026-03-29 the EU one; here a
  // day is still 86400 s and March still 31 days.
  EXPECT_EQ(add_partitions(T(2026, 3, 8), kDayIv, 1) - T(2026, 3, 8), 86400);
  EXPECT_EQ(add_partitions(T(2026, 3, 29), kDayIv, 1) - T(2026, 3, 29), 86400);
  EXPECT_EQ(add_partitions(T(2026, 3, 1), kMonthIv, 1) - T(2026, 3, 1), 31 * kDaySec);
  EXPECT_EQ(add_partitions(T(2026, 10, 25), kWeekIv, 1) - T(2026, 10, 25), 7 * kDaySec);
  // A local wall time read as UTC (e.g. 2026-03-29 01:30 Europe/Berlin ->
  // "2026-03-29 01:30") floors to the wall-clock midnight.
  EXPECT_EQ(floor_to_partition(T(2026, 3, 29, 1, 30), kDayIv), T(2026, 3, 29));
}

// ---- partition_suffix -----------------------------------------------------------

TEST(PartitionSuffix, PgPartmanFormats) {
  EXPECT_EQ(partition_suffix(T(2026, 1, 1), kYearIv), "p2026");
  EXPECT_EQ(partition_suffix(T(2026, 11, 1), kMonthIv), "p2026_11");
  EXPECT_EQ(partition_suffix(T(2026, 11, 28), kDayIv), "p2026_11_28");
  EXPECT_EQ(partition_suffix(T(2026, 11, 23), kWeekIv), "p2026w48");
  EXPECT_EQ(partition_suffix(T(2026, 11, 28, 12), fixed(6 * 3600)), "p2026_11_28_1200");
  EXPECT_EQ(partition_suffix(T(2026, 11, 28, 12, 0, 30), fixed(30)), "p2026_11_28_120030");
  EXPECT_EQ(partition_suffix(T(2026, 11, 28, 12, 1, 30), fixed(90)), "p2026_11_28_1201");
  EXPECT_EQ(partition_suffix(T(2026, 11, 28), fixed(2 * 86400)), "p2026_11_28");
  EXPECT_EQ(partition_suffix(T(2026, 11, 28), fixed(30 * 86400)), "p2026_11_28");
  EXPECT_EQ(partition_suffix(T(987, 3, 1), kMonthIv), "p0987_03");
}

TEST(PartitionSuffix, IsoWeekNumbering) {
  EXPECT_EQ(partition_suffix(T(2025, 12, 29), kWeekIv), "p2026w01");  // Dec 29 is in 2026-W01
  EXPECT_EQ(partition_suffix(T(2025, 12, 22), kWeekIv), "p2025w52");
  EXPECT_EQ(partition_suffix(T(2020, 12, 28), kWeekIv), "p2020w53");
  EXPECT_EQ(partition_suffix(T(2021, 1, 4), kWeekIv), "p2021w01");
  EXPECT_EQ(partition_suffix(T(2026, 12, 28), kWeekIv), "p2026w53");
  EXPECT_EQ(partition_suffix(T(2027, 1, 4), kWeekIv), "p2027w01");
  // Any instant of a week names the same week.
  EXPECT_EQ(partition_suffix(T(2026, 1, 4, 23), kWeekIv), "p2026w01");
}

TEST(PartitionSuffix, SortsAsTextInTimeOrder) {
  for (const auto& iv : {kDayIv, kWeekIv, kMonthIv, kYearIv, fixed(6 * 3600), fixed(45),
                         fixed(90), fixed(30 * 86400)}) {
    int64_t start = floor_to_partition(T(2019, 11, 3, 4, 5, 6), iv);
    std::string prev = partition_suffix(start, iv);
    const int steps = iv.unit == PartitionUnit::fixed && iv.fixed_seconds < 86400 ? 3000 : 600;
    for (int i = 0; i < steps; ++i) {
      start = add_partitions(start, iv, 1);
      const std::string cur = partition_suffix(start, iv);
      ASSERT_LT(prev, cur) << describe(iv) << " at " << start;
      prev = cur;
    }
  }
}

TEST(PartitionSuffix, RejectsOutOfRange) {
  expect_bad([] { partition_suffix(kMinEpochSeconds - 1, kYearIv); }, "-62135596801");
  expect_bad([] { partition_suffix(0, fixed(-5)); }, "-5s must be positive");
}
