// pg_cron-compatible schedules: every accepted form parses to the right bit
// sets, bad input names the bad value, and next_run walks the calendar in UTC.
#include <gtest/gtest.h>

#include "cron.hpp"
#include "error.hpp"
#include "partition_bounds.hpp"

using npc_scale::CronSchedule;
using npc_scale::describe;
using npc_scale::Error;
using npc_scale::next_run;
using npc_scale::parse_cron;

namespace {

int64_t T(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return npc_scale::epoch_from_civil({y, mo, d, h, mi, s});
}

uint64_t bits(std::initializer_list<int> vs) {
  uint64_t m = 0;
  for (int v : vs) m |= uint64_t{1} << v;
  return m;
}

uint64_t range_bits(int a, int b, int step = 1) {
  uint64_t m = 0;
  for (int v = a; v <= b; v += step) m |= uint64_t{1} << v;
  return m;
}

// Throws Error(22023) whose message contains `needle` (the bad value).
void expect_bad(const std::string& text, const std::string& needle) {
  try {
    parse_cron(text);
    ADD_FAILURE() << "accepted: \"" << text << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), npc_scale::sqlstate::invalid_parameter_value) << text;
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message for \"" << text << "\" lacks \"" << needle << "\": " << e.what();
  }
}

int64_t next(const std::string& text, int64_t after) { return next_run(parse_cron(text), after); }

}  // namespace

// ---- parsing ------------------------------------------------------------------

TEST(CronParse, AllStars) {
  const CronSchedule s = parse_cron("* * * * *");
  EXPECT_FALSE(npc_scale::is_interval_schedule(s));
  EXPECT_EQ(s.minutes, range_bits(0, 59));
  EXPECT_EQ(s.hours, range_bits(0, 23));
  EXPECT_EQ(s.days_of_month, range_bits(1, 31));
  EXPECT_EQ(s.months, range_bits(1, 12));
  EXPECT_EQ(s.days_of_week, range_bits(0, 6));
  EXPECT_TRUE(s.dom_star);
  EXPECT_TRUE(s.dow_star);
  EXPECT_FALSE(s.last_day_of_month);
}

TEST(CronParse, SingleValuesInEachField) {
  const CronSchedule s = parse_cron("5 4 3 2 1");
  EXPECT_EQ(s.minutes, bits({5}));
  EXPECT_EQ(s.hours, bits({4}));
  EXPECT_EQ(s.days_of_month, bits({3}));
  EXPECT_EQ(s.months, bits({2}));
  EXPECT_EQ(s.days_of_week, bits({1}));
  EXPECT_FALSE(s.dom_star);
  EXPECT_FALSE(s.dow_star);
  // Field extremes.
  const CronSchedule hi = parse_cron("59 23 31 12 6");
  EXPECT_EQ(hi.minutes, bits({59}));
  EXPECT_EQ(hi.hours, bits({23}));
  EXPECT_EQ(hi.days_of_month, bits({31}));
  EXPECT_EQ(hi.months, bits({12}));
  EXPECT_EQ(hi.days_of_week, bits({6}));
}

TEST(CronParse, RangesInEachField) {
  const CronSchedule s = parse_cron("10-15 9-17 1-7 3-5 1-5");
  EXPECT_EQ(s.minutes, range_bits(10, 15));
  EXPECT_EQ(s.hours, range_bits(9, 17));
  EXPECT_EQ(s.days_of_month, range_bits(1, 7));
  EXPECT_EQ(s.months, range_bits(3, 5));
  EXPECT_EQ(s.days_of_week, range_bits(1, 5));
  EXPECT_EQ(parse_cron("7-7 * * * *").minutes, bits({7}));
}

TEST(CronParse, StarStepsInEachField) {
  const CronSchedule s = parse_cron("*/15 */6 */10 */3 */2");
  EXPECT_EQ(s.minutes, bits({0, 15, 30, 45}));
  EXPECT_EQ(s.hours, bits({0, 6, 12, 18}));
  EXPECT_EQ(s.days_of_month, bits({1, 11, 21, 31}));  // steps count from the field's low end
  EXPECT_EQ(s.months, bits({1, 4, 7, 10}));
  EXPECT_EQ(s.days_of_week, bits({0, 2, 4, 6}));
  EXPECT_TRUE(s.dom_star);  // '*/n' still counts as '*' for the dom/dow rule (Vixie)
  EXPECT_TRUE(s.dow_star);
  EXPECT_EQ(parse_cron("*/1 * * * *").minutes, range_bits(0, 59));
  EXPECT_EQ(parse_cron("*/59 * * * *").minutes, bits({0, 59}));
  EXPECT_EQ(parse_cron("0 0 * * */7").days_of_week, bits({0}));  // {0, 7} = Sunday
}

TEST(CronParse, RangeStepsInEachField) {
  const CronSchedule s = parse_cron("10-50/20 1-23/11 2-30/14 2-12/5 1-7/3");
  EXPECT_EQ(s.minutes, bits({10, 30, 50}));
  EXPECT_EQ(s.hours, bits({1, 12, 23}));
  EXPECT_EQ(s.days_of_month, bits({2, 16, 30}));
  EXPECT_EQ(s.months, bits({2, 7, 12}));
  EXPECT_EQ(s.days_of_week, bits({0, 1, 4}));  // 1, 4, 7 -> 7 is Sunday
  EXPECT_FALSE(s.dom_star);
}

TEST(CronParse, ListsMixingForms) {
  const CronSchedule s = parse_cron("0,30,45-47,50-58/4 1,2 1,15,31 1,6-7 0,6");
  EXPECT_EQ(s.minutes, bits({0, 30, 45, 46, 47, 50, 54, 58}));
  EXPECT_EQ(s.hours, bits({1, 2}));
  EXPECT_EQ(s.days_of_month, bits({1, 15, 31}));
  EXPECT_EQ(s.months, bits({1, 6, 7}));
  EXPECT_EQ(s.days_of_week, bits({0, 6}));
}

TEST(CronParse, MonthAndDayNamesCaseInsensitive) {
  const CronSchedule s = parse_cron("0 9 * JAN-mar,Dec mon-FRI");
  EXPECT_EQ(s.months, bits({1, 2, 3, 12}));
  EXPECT_EQ(s.days_of_week, range_bits(1, 5));
  EXPECT_EQ(parse_cron("0 0 * jan-dec/6 sun,sat").months, bits({1, 7}));
  EXPECT_EQ(parse_cron("0 0 * * sun,sat").days_of_week, bits({0, 6}));
  EXPECT_EQ(parse_cron("0 0 * * Sun"), parse_cron("0 0 * * 0"));
}

TEST(CronParse, SevenIsSunday) {
  EXPECT_EQ(parse_cron("0 0 * * 7"), parse_cron("0 0 * * 0"));
  EXPECT_EQ(parse_cron("0 0 * * 7").days_of_week, bits({0}));
  EXPECT_EQ(parse_cron("0 0 * * 5-7").days_of_week, bits({0, 5, 6}));
  EXPECT_EQ(parse_cron("0 0 * * 0-7").days_of_week, range_bits(0, 6));
}

TEST(CronParse, LastDayOfMonthDollar) {
  const CronSchedule s = parse_cron("0 12 $ * *");
  EXPECT_TRUE(s.last_day_of_month);
  EXPECT_EQ(s.days_of_month, 0u);
  EXPECT_FALSE(s.dom_star);
}

TEST(CronParse, Shortcuts) {
  EXPECT_EQ(parse_cron("@yearly"), parse_cron("0 0 1 1 *"));
  EXPECT_EQ(parse_cron("@annually"), parse_cron("0 0 1 1 *"));
  EXPECT_EQ(parse_cron("@monthly"), parse_cron("0 0 1 * *"));
  EXPECT_EQ(parse_cron("@weekly"), parse_cron("0 0 * * 0"));
  EXPECT_EQ(parse_cron("@daily"), parse_cron("0 0 * * *"));
  EXPECT_EQ(parse_cron("@midnight"), parse_cron("0 0 * * *"));
  EXPECT_EQ(parse_cron("@hourly"), parse_cron("0 * * * *"));
  EXPECT_EQ(parse_cron("  @Daily \n"), parse_cron("0 0 * * *"));
}

TEST(CronParse, WhitespaceIsFlexible) {
  EXPECT_EQ(parse_cron("  0\t0  *   * *  "), parse_cron("0 0 * * *"));
}

TEST(CronParse, IntervalSeconds) {
  const CronSchedule one = parse_cron("1 second");
  EXPECT_TRUE(npc_scale::is_interval_schedule(one));
  EXPECT_EQ(one.interval_seconds, 1);
  EXPECT_EQ(parse_cron("1 seconds").interval_seconds, 1);  // pg_cron allows both
  EXPECT_EQ(parse_cron("59 seconds").interval_seconds, 59);
  EXPECT_EQ(parse_cron(" 30 SECONDS ").interval_seconds, 30);
  EXPECT_EQ(parse_cron("5seconds").interval_seconds, 5);  // pg_cron's sscanf allows no space
  EXPECT_FALSE(npc_scale::is_interval_schedule(parse_cron("* * * * *")));
}

// ---- rejection ------------------------------------------------------------------

TEST(CronParseErrors, IntervalOutOfRangeOrWrongUnit) {
  expect_bad("0 seconds", "0 is out of range 1-59");
  expect_bad("60 seconds", "60 is out of range 1-59");
  expect_bad("99999999999 seconds", "99999999999");
  expect_bad("5 minutes", "\"minutes\"");
  expect_bad("5 secs", "\"secs\"");
}

TEST(CronParseErrors, WrongFieldCount) {
  expect_bad("* * * *", "got 4");
  expect_bad("* * * * * *", "got 6");
  expect_bad("0 0 * * * /usr/bin/true", "got 6");
  expect_bad("5", "got 1");
}

TEST(CronParseErrors, OutOfRangeValues) {
  expect_bad("60 * * * *", "minute field \"60\": 60 is out of range 0-59");
  expect_bad("* 24 * * *", "hour field \"24\": 24 is out of range 0-23");
  expect_bad("* * 32 * *", "day-of-month field \"32\": 32 is out of range 1-31");
  expect_bad("* * 0 * *", "0 is out of range 1-31");
  expect_bad("* * * 13 *", "month field \"13\": 13 is out of range 1-12");
  expect_bad("* * * 0 *", "0 is out of range 1-12");
  expect_bad("* * * * 8", "day-of-week field \"8\": 8 is out of range 0-7");
  expect_bad("0-60 * * * *", "60 is out of range");
  expect_bad("1,2,99 * * * *", "99 is out of range");
  expect_bad("99999999999 * * * *", "99999999999 is out of range");
}

TEST(CronParseErrors, BadNames) {
  expect_bad("0 0 * foo *", "\"foo\" is not a number or a name (jan..dec)");
  expect_bad("0 0 * january *", "\"january\"");
  expect_bad("0 0 * * funday", "\"funday\" is not a number or a name (sun..sat)");
  expect_bad("0 0 * mon *", "\"mon\"");  // day name in the month field
  expect_bad("0 0 * * jan", "\"jan\"");  // month name in the day-of-week field
  expect_bad("0 0 mon * *", "day-of-month field \"mon\": \"mon\" is not a number");
  expect_bad("x * * * *", "minute field \"x\"");
  expect_bad("-1 * * * *", "\"\" is not a number");
}

TEST(CronParseErrors, EmptyAndGarbage) {
  expect_bad("", "empty schedule");
  expect_bad("   \t", "empty schedule");
  expect_bad("hello world", "got 2");
  expect_bad("* * * * ?", "day-of-week field \"?\"");
  expect_bad("1,,2 * * * *", "empty list element");
  expect_bad("1, * * * *", "minute field \"1,\": empty list element");
  expect_bad("*x * * * *", "unexpected \"x\" after '*'");
  expect_bad("*,5 * * * *", "'*' must stand alone");
  expect_bad("0 0 $,1 * *", "day-of-month field \"$,1\"");
}

TEST(CronParseErrors, ReversedRanges) {
  expect_bad("5-1 * * * *", "range \"5-1\" is reversed");
  expect_bad("0 0 * * sat-sun", "range \"sat-sun\" is reversed");
  expect_bad("0 0 * dec-jan *", "range \"dec-jan\" is reversed");
}

TEST(CronParseErrors, BadSteps) {
  expect_bad("*/0 * * * *", "step 0 must be at least 1");
  expect_bad("1-10/0 * * * *", "step 0 must be at least 1");
  expect_bad("*/60 * * * *", "step 60 is larger than 59");
  expect_bad("* */24 * * *", "step 24 is larger than 23");
  expect_bad("*/x * * * *", "step \"x\" is not a number");
  expect_bad("*/ * * * *", "step \"\" is not a number");
  expect_bad("5/15 * * * *", "step \"5/15\" needs a range");  // pg_cron rejects 'a/n' too
}

TEST(CronParseErrors, ShortcutsNotAccepted) {
  expect_bad("@reboot", "@reboot is not supported");
  expect_bad("@restart", "@restart is not supported");
  expect_bad("@fortnightly", "unknown shortcut @fortnightly");
  expect_bad("@daily 5", "unknown shortcut @daily 5");
}

TEST(CronParseErrors, SchedulesThatNeverFire) {
  expect_bad("0 0 30 2 *", "never matches");
  expect_bad("0 0 31 4,6,9,11 *", "never matches");
  // ... but the OR rule rescues an impossible day-of-month.
  EXPECT_NO_THROW(parse_cron("0 0 30 2 1"));
  EXPECT_NO_THROW(parse_cron("0 0 29 2 *"));
}

// ---- describe -------------------------------------------------------------------

TEST(CronDescribe, CanonicalText) {
  EXPECT_EQ(describe(parse_cron("* * * * *")), "* * * * *");
  EXPECT_EQ(describe(parse_cron("@daily")), "0 0 * * *");
  EXPECT_EQ(describe(parse_cron("@weekly")), "0 0 * * 0");
  EXPECT_EQ(describe(parse_cron("@yearly")), "0 0 1 1 *");
  EXPECT_EQ(describe(parse_cron("0 9 * * MON-FRI")), "0 9 * * 1-5");
  EXPECT_EQ(describe(parse_cron("0 0 * * 7")), "0 0 * * 0");
  EXPECT_EQ(describe(parse_cron("*/5 * * * *")), "*/5 * * * *");
  EXPECT_EQ(describe(parse_cron("0-59/5 * * * *")), "*/5 * * * *");
  EXPECT_EQ(describe(parse_cron("1,2,3,7,9 * * jan,feb *")), "1-3,7,9 * * 1,2 *");
  EXPECT_EQ(describe(parse_cron("5-50/15 * * * *")), "5-50/15 * * * *");
  EXPECT_EQ(describe(parse_cron("0 0 */2 * *")), "0 0 */2 * *");
  EXPECT_EQ(describe(parse_cron("0 0 1-31/2 * *")), "0 0 1-31/2 * *");  // not '*': OR rule differs
  EXPECT_EQ(describe(parse_cron("0 0 1 * 0-7")), "0 0 1 * 0-6");
  EXPECT_EQ(describe(parse_cron("0 12 $ * *")), "0 12 $ * *");
  EXPECT_EQ(describe(parse_cron("30 seconds")), "30 seconds");
  EXPECT_EQ(describe(parse_cron("1 seconds")), "1 second");
}

TEST(CronDescribe, RoundTrips) {
  for (const char* text :
       {"* * * * *", "*/7 1-5 */3 2-11/3 1-5", "0,30,45-47 9-17 1,15,$x 1 0", "0 0 1-31/2 * 5",
        "0 0 */2 * 5", "0 12 $ * 1", "0 0 29 2 *", "59 23 31 12 6", "15 */6 * * sun,wed",
        "@hourly", "@monthly", "7 seconds", "1 second"}) {
    CronSchedule s;
    try {
      s = parse_cron(text);
    } catch (const Error&) {
      continue;  // deliberately invalid entries ('$x') are covered elsewhere
    }
    EXPECT_EQ(parse_cron(describe(s)), s) << text << " -> " << describe(s);
  }
}

// ---- next_run -------------------------------------------------------------------

TEST(CronNextRun, MinuteBoundaries) {
  EXPECT_EQ(next("* * * * *", T(2026, 5, 1, 12, 0, 0)), T(2026, 5, 1, 12, 1));  // strictly after
  EXPECT_EQ(next("* * * * *", T(2026, 5, 1, 12, 0, 30)), T(2026, 5, 1, 12, 1));
  EXPECT_EQ(next("* * * * *", T(2026, 5, 1, 11, 59, 59)), T(2026, 5, 1, 12, 0));
}

TEST(CronNextRun, EveryFiveMinutes) {
  EXPECT_EQ(next("*/5 * * * *", T(2026, 5, 1, 12, 3, 10)), T(2026, 5, 1, 12, 5));
  EXPECT_EQ(next("*/5 * * * *", T(2026, 5, 1, 12, 5, 0)), T(2026, 5, 1, 12, 10));
  EXPECT_EQ(next("*/5 * * * *", T(2026, 5, 1, 12, 55, 0)), T(2026, 5, 1, 13, 0));
  EXPECT_EQ(next("*/5 * * * *", T(2026, 12, 31, 23, 58, 0)), T(2027, 1, 1, 0, 0));
}

TEST(CronNextRun, HourAndDayBoundaries) {
  EXPECT_EQ(next("0 * * * *", T(2026, 5, 1, 12, 30)), T(2026, 5, 1, 13, 0));
  EXPECT_EQ(next("0 * * * *", T(2026, 5, 1, 23, 0)), T(2026, 5, 2, 0, 0));
  EXPECT_EQ(next("30 23 * * *", T(2026, 5, 1, 23, 30)), T(2026, 5, 2, 23, 30));
  EXPECT_EQ(next("30 23 * * *", T(2026, 5, 1, 23, 29, 59)), T(2026, 5, 1, 23, 30));
  EXPECT_EQ(next("15 3,20 * * *", T(2026, 5, 1, 3, 16)), T(2026, 5, 1, 20, 15));
  EXPECT_EQ(next("@daily", T(2026, 5, 1, 0, 0)), T(2026, 5, 2));
}

TEST(CronNextRun, MonthAndYearBoundaries) {
  EXPECT_EQ(next("0 0 1 * *", T(2026, 1, 15)), T(2026, 2, 1));
  EXPECT_EQ(next("0 0 1 * *", T(2026, 12, 1)), T(2027, 1, 1));
  EXPECT_EQ(next("0 0 1 1 *", T(2026, 6, 1)), T(2027, 1, 1));
  EXPECT_EQ(next("@yearly", T(2026, 12, 31, 23, 59, 59)), T(2027, 1, 1));
  EXPECT_EQ(next("0 6 * mar *", T(2026, 4, 1)), T(2027, 3, 1, 6, 0));
}

TEST(CronNextRun, LeapDay) {
  EXPECT_EQ(next("0 0 29 2 *", T(2025, 1, 1)), T(2028, 2, 29));
  EXPECT_EQ(next("0 0 29 2 *", T(2024, 2, 29)), T(2028, 2, 29));
  // 2100 is not a leap year: 2096 -> 2104.
  EXPECT_EQ(next("0 0 29 2 *", T(2096, 3, 1)), T(2104, 2, 29));
}

TEST(CronNextRun, Day31SkipsShortMonths) {
  EXPECT_EQ(next("0 0 31 * *", T(2026, 1, 31)), T(2026, 3, 31));
  EXPECT_EQ(next("0 0 31 * *", T(2026, 3, 31)), T(2026, 5, 31));
  EXPECT_EQ(next("0 0 31 * *", T(2026, 7, 31)), T(2026, 8, 31));
  EXPECT_EQ(next("0 0 30 * *", T(2026, 1, 30)), T(2026, 3, 30));  // skips February
}

TEST(CronNextRun, LastDayOfMonth) {
  EXPECT_EQ(next("0 12 $ * *", T(2024, 2, 1)), T(2024, 2, 29, 12));
  EXPECT_EQ(next("0 12 $ * *", T(2025, 2, 1)), T(2025, 2, 28, 12));
  EXPECT_EQ(next("0 12 $ * *", T(2025, 2, 28, 12)), T(2025, 3, 31, 12));
}

TEST(CronNextRun, DomDowOrRule) {
  // 2026-02-01 is a Sunday; Friday 2026-02-06; Tuesday 2026-02-10; Friday 2026-02-13.
  ASSERT_EQ(npc_scale::day_of_week(T(2026, 2, 6)), 5);
  // Both restricted: the 10th OR any Friday.
  EXPECT_EQ(next("0 0 10 * 5", T(2026, 2, 1)), T(2026, 2, 6));
  EXPECT_EQ(next("0 0 10 * 5", T(2026, 2, 7)), T(2026, 2, 10));
  EXPECT_EQ(next("0 0 10 * fri", T(2026, 2, 10)), T(2026, 2, 13));
  // Only one restricted: that one alone decides.
  EXPECT_EQ(next("0 0 10 * *", T(2026, 2, 1)), T(2026, 2, 10));
  EXPECT_EQ(next("0 0 * * 5", T(2026, 2, 7)), T(2026, 2, 13));
  // A field starting with '*' (even '*/2') makes it AND, like Vixie cron:
  // odd days that are Fridays -> Feb 6 is even, Feb 13 qualifies.
  EXPECT_EQ(next("0 0 */2 * 5", T(2026, 2, 1)), T(2026, 2, 13));
  // '1-31/2' is not '*': OR again, so Feb 1 (odd) ... first after midnight is Feb 3.
  EXPECT_EQ(next("0 0 1-31/2 * 5", T(2026, 2, 1)), T(2026, 2, 3));
  // '$' with a day-of-week: last day OR Monday.
  EXPECT_EQ(next("0 0 $ * 1", T(2026, 2, 24)), T(2026, 2, 28));
}

TEST(CronNextRun, WeekdaysAndSunday) {
  // Friday 2026-02-06 09:00 -> Monday 2026-02-09 09:00.
  EXPECT_EQ(next("0 9 * * mon-fri", T(2026, 2, 6, 9, 0)), T(2026, 2, 9, 9, 0));
  EXPECT_EQ(next("0 0 * * 7", T(2026, 2, 2)), T(2026, 2, 8));
  EXPECT_EQ(next("@weekly", T(2026, 2, 2)), T(2026, 2, 8));
}

TEST(CronNextRun, IntervalSeconds) {
  EXPECT_EQ(next("30 seconds", T(2026, 5, 1, 12, 0, 7)), T(2026, 5, 1, 12, 0, 37));
  EXPECT_EQ(next("1 second", 1000), 1001);
  EXPECT_EQ(next("59 seconds", T(2026, 12, 31, 23, 59, 30)), T(2027, 1, 1, 0, 0, 29));
}

TEST(CronNextRun, BeforeTheEpochAndRangeLimits) {
  EXPECT_EQ(next("0 0 * * *", -1), 0);
  EXPECT_EQ(next("*/5 * * * *", T(1969, 12, 31, 23, 52)), T(1969, 12, 31, 23, 55));
  EXPECT_THROW(next_run(parse_cron("* * * * *"), npc_scale::kMaxEpochSeconds + 1), Error);
  EXPECT_THROW(next_run(parse_cron("0 0 1 1 *"), T(9999, 6, 1)), Error);  // no run before 10000
}

// Cross-check the day-skipping search against a minute-by-minute scan.
TEST(CronNextRun, MatchesBruteForceScan) {
  const auto matches = [](const CronSchedule& s, int64_t t) {
    const npc_scale::CivilTime c = npc_scale::civil_from_epoch(t);
    const bool dom = (s.days_of_month >> c.day & 1) ||
                     (s.last_day_of_month && c.day == npc_scale::days_in_month(c.year, c.month));
    const bool dow = s.days_of_week >> npc_scale::day_of_week(t) & 1;
    return (s.minutes >> c.minute & 1) && (s.hours >> c.hour & 1) && (s.months >> c.month & 1) &&
           ((s.dom_star || s.dow_star) ? (dom && dow) : (dom || dow));
  };
  const char* schedules[] = {"*/7 */5 * * *", "0 12 $ * *",        "0 0 10 * 5",
                             "45 23 */2 * 5", "0,30 9-17 * * 1-5", "0 0 31 * *",
                             "5 4 * jan,jul sun", "59 23 1-7 * 1"};
  for (const char* text : schedules) {
    const CronSchedule s = parse_cron(text);
    for (int64_t start = T(2023, 12, 20, 7, 13, 29); start < T(2025, 3, 1); start += 86400 * 9 + 1237) {
      int64_t t = (start / 60 + 1) * 60;
      while (!matches(s, t)) t += 60;
      ASSERT_EQ(next_run(s, start), t) << text << " after " << start;
    }
  }
}
