#include "cron.hpp"

#include <cctype>
#include <vector>

#include "error.hpp"
#include "partition_bounds.hpp"  // UTC civil-time helpers

namespace npc_scale {

namespace {

constexpr int64_t kDay = 86400;

const char* const kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                   "jul", "aug", "sep", "oct", "nov", "dec", nullptr};
const char* const kDowNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", nullptr};

struct FieldSpec {
  const char* name;
  int low;
  int high;
  const char* const* names;  // names[i] means low + i
};

const FieldSpec kFields[5] = {
    {"minute", 0, 59, nullptr},
    {"hour", 0, 23, nullptr},
    {"day-of-month", 1, 31, nullptr},
    {"month", 1, 12, kMonthNames},
    {"day-of-week", 0, 7, kDowNames},
};

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Digits only; longer than 6 digits is out of every range, so cap instead of overflowing.
int to_int(const std::string& digits) { return digits.size() > 6 ? 999999 : std::stoi(digits); }

[[noreturn]] void fail(const std::string& text, const std::string& why) {
  throw Error(sqlstate::invalid_parameter_value,
              "invalid cron schedule \"" + text + "\": " + why);
}

struct FieldParser {
  const std::string& text;  // whole schedule, for messages
  const FieldSpec& spec;
  const std::string& field;

  [[noreturn]] void fail_field(const std::string& why) const {
    fail(text, std::string(spec.name) + " field \"" + field + "\": " + why);
  }

  int value(const std::string& tok) const {
    if (all_digits(tok)) {
      const int v = to_int(tok);
      if (v < spec.low || v > spec.high) {
        fail_field(tok + " is out of range " + std::to_string(spec.low) + "-" +
                   std::to_string(spec.high));
      }
      return v;
    }
    if (spec.names != nullptr) {
      const std::string l = lower(tok);
      for (int i = 0; spec.names[i] != nullptr; ++i) {
        if (l == spec.names[i]) return spec.low + i;
      }
      fail_field("\"" + tok + "\" is not a number or a name (" + spec.names[0] + ".." +
                 (spec.names == kMonthNames ? "dec" : "sat") + ")");
    }
    fail_field("\"" + tok + "\" is not a number");
  }

  int step(const std::string& tok) const {
    if (!all_digits(tok)) fail_field("step \"" + tok + "\" is not a number");
    const int s = to_int(tok);
    if (s < 1) fail_field("step " + tok + " must be at least 1");
    // Vixie/pg_cron reject steps beyond the field's maximum.
    if (s > spec.high) {
      fail_field("step " + tok + " is larger than " + std::to_string(spec.high));
    }
    return s;
  }

  // Returns the bit set (bit v = value v); sets `star` when the field is '*' or '*/n'.
  uint64_t parse(bool& star) const {
    std::vector<std::string> elems;
    size_t begin = 0;
    for (;;) {
      const size_t comma = field.find(',', begin);
      elems.push_back(field.substr(begin, comma - begin));
      if (comma == std::string::npos) break;
      begin = comma + 1;
    }
    star = false;
    uint64_t mask = 0;
    for (const std::string& e : elems) {
      if (e.empty()) fail_field("empty list element");
      int a = spec.low, b = spec.high, s = 1;
      if (e[0] == '*') {
        // '*' carries the "unrestricted" meaning for the dom/dow rule; inside a
        // list that meaning is ambiguous, so require it alone.
        if (elems.size() > 1) fail_field("'*' must stand alone, not in a list");
        star = true;
        if (e.size() > 1) {
          if (e[1] != '/') fail_field("unexpected \"" + e.substr(1) + "\" after '*'");
          s = step(e.substr(2));
        }
      } else {
        const size_t slash = e.find('/');
        const std::string range = e.substr(0, slash);
        const size_t dash = range.find('-');
        if (dash == std::string::npos) {
          // pg_cron rejects 'a/n' (other crons read it as a-max/n); be explicit.
          if (slash != std::string::npos) {
            fail_field("step \"" + e + "\" needs a range: use */n or a-b/n");
          }
          a = b = value(range);
        } else {
          a = value(range.substr(0, dash));
          b = value(range.substr(dash + 1));
          if (a > b) fail_field("range \"" + e + "\" is reversed");
        }
        if (slash != std::string::npos) s = step(e.substr(slash + 1));
      }
      for (int v = a; v <= b; v += s) mask |= uint64_t{1} << v;
    }
    return mask;
  }
};

// Fires on this UTC day? (month and day rules only.)
bool day_matches(const CronSchedule& s, const CivilTime& c, int64_t day) {
  if (!(s.months & (1u << c.month))) return false;
  const bool dom = (s.days_of_month & (1u << c.day)) != 0 ||
                   (s.last_day_of_month && c.day == days_in_month(c.year, c.month));
  const bool dow = (s.days_of_week & (1u << day_of_week(day * kDay))) != 0;
  return (s.dom_star || s.dow_star) ? (dom && dow) : (dom || dow);
}

// First cron fire time >= the whole minute t. Searches one full Gregorian
// cycle (400 years), after which every month/day/weekday combination has
// recurred, so "not found" means "never".
bool find_at_or_after(const CronSchedule& s, int64_t t, int64_t* out) {
  int64_t day = floor_div(t, kDay);
  const int64_t sod = t - day * kDay;
  int start_h = static_cast<int>(sod / 3600);
  int start_m = static_cast<int>(sod % 3600 / 60);
  const int64_t last_day = day + 146097;
  for (; day <= last_day; ++day, start_h = 0, start_m = 0) {
    if (day * kDay > kMaxEpochSeconds) return false;
    const CivilTime c = civil_from_epoch(day * kDay);
    if (!(s.months & (1u << c.month))) {
      day += days_in_month(c.year, c.month) - c.day;  // skip the rest of this month
      continue;
    }
    if (!day_matches(s, c, day)) continue;
    for (int h = start_h; h < 24; ++h) {
      if (!(s.hours & (1u << h))) continue;
      for (int m = (h == start_h ? start_m : 0); m < 60; ++m) {
        if (s.minutes & (uint64_t{1} << m)) {
          *out = day * kDay + h * 3600 + m * 60;
          return true;
        }
      }
    }
  }
  return false;
}

// Mask '*/step' produces over low..high (day-of-week folds 7 onto 0).
uint64_t star_mask(const FieldSpec& f, int step) {
  uint64_t m = 0;
  for (int v = f.low; v <= f.high; v += step) m |= uint64_t{1} << v;
  if (f.high == 7 && (m >> 7 & 1)) m = (m & 0x7f) | 1;
  return m;
}

enum class StarForm { allowed, required, forbidden };

std::string field_text(const FieldSpec& f, uint64_t mask, StarForm star) {
  if (star != StarForm::forbidden) {
    for (int s = 1; s <= f.high; ++s) {
      const uint64_t m = star_mask(f, s);
      // Optional star forms only for real sets: '1', not '*/12', for @yearly's month.
      const bool single = (m & (m - 1)) == 0;
      if (m == mask && (star == StarForm::required || !single)) {
        return s == 1 ? "*" : "*/" + std::to_string(s);
      }
    }
  }
  std::vector<int> v;
  const int high = f.high == 7 ? 6 : f.high;
  for (int i = f.low; i <= high; ++i) {
    if (mask >> i & 1) v.push_back(i);
  }
  if (v.size() >= 4 && v[1] - v[0] > 1) {
    bool progression = true;
    for (size_t i = 2; i < v.size(); ++i) progression &= (v[i] - v[i - 1] == v[1] - v[0]);
    if (progression) {
      return std::to_string(v.front()) + "-" + std::to_string(v.back()) + "/" +
             std::to_string(v[1] - v[0]);
    }
  }
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ",";
    if (j - i >= 2) {
      out += std::to_string(v[i]) + "-" + std::to_string(v[j]);
      i = j + 1;
    } else {
      out += std::to_string(v[i]);
      ++i;
    }
  }
  return out;
}

CronSchedule parse_fields(const std::string& text, const std::string& body) {
  std::vector<std::string> fields;
  for (size_t i = 0; i < body.size();) {
    if (is_blank(body[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < body.size() && !is_blank(body[j])) ++j;
    fields.push_back(body.substr(i, j - i));
    i = j;
  }
  if (fields.size() != 5) {
    fail(text, "expected 5 fields (minute hour day-of-month month day-of-week), got " +
                   std::to_string(fields.size()));
  }
  CronSchedule s;
  bool star = false;
  s.minutes = FieldParser{text, kFields[0], fields[0]}.parse(star);
  s.hours = static_cast<uint32_t>(FieldParser{text, kFields[1], fields[1]}.parse(star));
  if (fields[2] == "$") {
    s.last_day_of_month = true;  // pg_cron: '$' = last day of the month, only on its own
  } else {
    s.days_of_month = static_cast<uint32_t>(FieldParser{text, kFields[2], fields[2]}.parse(star));
    s.dom_star = star;
  }
  s.months = static_cast<uint16_t>(FieldParser{text, kFields[3], fields[3]}.parse(star));
  uint64_t dow = FieldParser{text, kFields[4], fields[4]}.parse(star);
  if (dow >> 7 & 1) dow = (dow & 0x7f) | 1;  // 7 = Sunday
  s.days_of_week = static_cast<uint8_t>(dow);
  s.dow_star = star;
  return s;
}

CronSchedule parse_shortcut(const std::string& text) {
  const std::string name = lower(text);
  const char* expansion = nullptr;
  if (name == "@yearly" || name == "@annually") expansion = "0 0 1 1 *";
  else if (name == "@monthly") expansion = "0 0 1 * *";
  else if (name == "@weekly") expansion = "0 0 * * 0";
  else if (name == "@daily" || name == "@midnight") expansion = "0 0 * * *";
  else if (name == "@hourly") expansion = "0 * * * *";
  else if (name == "@reboot" || name == "@restart") {
    fail(text, text + " is not supported: schedules here are time-based and a worker restart "
                      "must not re-run jobs");
  } else {
    fail(text, "unknown shortcut " + text +
                   " (use @yearly @annually @monthly @weekly @daily @midnight @hourly)");
  }
  return parse_fields(text, expansion);
}

// '<digits> <word>' — pg_cron's interval form is '<N> second[s]'.
bool looks_like_interval(const std::string& t) {
  size_t i = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
  if (i == 0) return false;
  while (i < t.size() && is_blank(t[i])) ++i;
  const size_t word = i;
  while (i < t.size() && std::isalpha(static_cast<unsigned char>(t[i]))) ++i;
  return i > word && i == t.size();
}

CronSchedule parse_interval(const std::string& text) {
  size_t i = 0;
  while (std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  const std::string number = text.substr(0, i);
  const int n = to_int(number);
  while (is_blank(text[i])) ++i;
  const std::string unit = lower(text.substr(i));
  if (unit != "second" && unit != "seconds") {
    fail(text, "unit \"" + text.substr(i) +
                   "\" is not supported: interval schedules are '1 seconds' to "
                   "'59 seconds'; use a cron expression (e.g. '*/5 * * * *') for longer periods");
  }
  if (n < 1 || n > 59) fail(text, number + " is out of range 1-59 seconds");
  CronSchedule s;
  s.interval_seconds = n;
  return s;
}

}  // namespace

bool operator==(const CronSchedule& a, const CronSchedule& b) {
  return a.interval_seconds == b.interval_seconds && a.minutes == b.minutes &&
         a.hours == b.hours && a.days_of_month == b.days_of_month && a.months == b.months &&
         a.days_of_week == b.days_of_week && a.last_day_of_month == b.last_day_of_month &&
         a.dom_star == b.dom_star && a.dow_star == b.dow_star;
}

CronSchedule parse_cron(const std::string& text) {
  size_t b = 0, e = text.size();
  while (b < e && is_blank(text[b])) ++b;
  while (e > b && is_blank(text[e - 1])) --e;
  const std::string t = text.substr(b, e - b);
  if (t.empty()) fail(text, "empty schedule");

  CronSchedule s;
  if (t[0] == '@') {
    s = parse_shortcut(t);
  } else if (looks_like_interval(t)) {
    return parse_interval(t);
  } else {
    s = parse_fields(t, t);
  }
  // e.g. '0 0 30 2 *' parses but would sit in the jobs table never running.
  int64_t unused = 0;
  if (!find_at_or_after(s, 0, &unused)) fail(text, "never matches any date");
  return s;
}

bool is_interval_schedule(const CronSchedule& s) { return s.interval_seconds > 0; }

int64_t next_run(const CronSchedule& s, int64_t after_epoch_s) {
  if (after_epoch_s < kMinEpochSeconds || after_epoch_s > kMaxEpochSeconds) {
    throw Error(sqlstate::invalid_parameter_value,
                "time " + std::to_string(after_epoch_s) +
                    " is outside the supported range (years 0001-9999 UTC)");
  }
  if (is_interval_schedule(s)) return add_fixed_interval(after_epoch_s, s.interval_seconds, 1);
  int64_t out = 0;
  // Cron fires on whole minutes; "strictly after" starts at the next one.
  if (!find_at_or_after(s, floor_div(after_epoch_s, 60) * 60 + 60, &out)) {
    throw Error(sqlstate::invalid_parameter_value,
                "cron schedule \"" + describe(s) + "\" has no run after " +
                    std::to_string(after_epoch_s) + " before year 10000");
  }
  return out;
}

std::string describe(const CronSchedule& s) {
  if (is_interval_schedule(s)) {
    return std::to_string(s.interval_seconds) +
           (s.interval_seconds == 1 ? " second" : " seconds");
  }
  const auto star_form = [](bool star) { return star ? StarForm::required : StarForm::forbidden; };
  return field_text(kFields[0], s.minutes, StarForm::allowed) + " " +
         field_text(kFields[1], s.hours, StarForm::allowed) + " " +
         (s.last_day_of_month ? std::string("$")
                              : field_text(kFields[2], s.days_of_month, star_form(s.dom_star))) +
         " " + field_text(kFields[3], s.months, StarForm::allowed) + " " +
         field_text(kFields[4], s.days_of_week, star_form(s.dow_star));
}

}  // namespace npc_scale
