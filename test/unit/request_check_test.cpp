// Bad input to request_decision(): every rule gives its SQLSTATE and names the value.
#include <gtest/gtest.h>

#include "error.hpp"
#include "request_check.hpp"

using npc_scale::check_generate_prompt;
using npc_scale::check_request;
using npc_scale::Error;
using npc_scale::RequestArgs;

namespace {
RequestArgs good() { return RequestArgs{42, std::string("build"), std::string("What next?"), 5, std::nullopt}; }

void expect_error(const RequestArgs& a, const std::string& sqlstate, const std::string& needle,
                  int max_bytes = 100) {
  try {
    check_request(a, max_bytes);
    FAIL() << "no error; expected " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), sqlstate);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(RequestCheckTest, AcceptsAGoodRequest) { EXPECT_NO_THROW(check_request(good(), 100)); }

TEST(RequestCheckTest, NullNpcId) {
  auto a = good();
  a.npc_id.reset();
  expect_error(a, "22004", "npc_id must not be null");
}

TEST(RequestCheckTest, BlankOrNullDecisionType) {
  auto a = good();
  a.decision_type = "  ";
  expect_error(a, "22023", "decision_type must not be empty or blank (got '  ')");
  a.decision_type.reset();
  expect_error(a, "22004", "decision_type must not be null");
}

TEST(RequestCheckTest, BlankOrNullPrompt) {
  auto a = good();
  a.prompt = "";
  expect_error(a, "22023", "prompt for npc 42 must not be empty or blank");
  a.prompt = " \t\r\n ";
  expect_error(a, "22023", "prompt for npc 42 must not be empty or blank");
  // Vertical tab, form feed, no-break, em, ideographic spaces, line separator.
  a.prompt = "\v\f\u00A0\u2003\u3000\u2028";
  expect_error(a, "22023", "prompt for npc 42 must not be empty or blank");
  a.prompt = std::string("\u3000") + '\0';  // a NUL is not blank
  EXPECT_NO_THROW(check_request(a, 100));
  for (const char* p : {"\u3000x", "\u00A0\u00E9", "\u200B", "\xE3\x80"}) {  // text, zero-width space, cut UTF-8
    a.prompt = p;
    EXPECT_NO_THROW(check_request(a, 100)) << p;
  }
  a.prompt.reset();
  expect_error(a, "22004", "prompt for npc 42 must not be null");
}

TEST(RequestCheckTest, ABatchsPromptIsNamedByItsPlace) {
  auto a = good();
  a.position = 2;
  a.prompt = " ";
  expect_error(a, "22023", "prompts[2] (npc 42) must not be empty or blank");
  a.prompt = std::string(101, 'x');
  expect_error(a, "54000", "prompts[2] (npc 42) is 101 bytes");
}

TEST(RequestCheckTest, GeneratePromptNotBlankAndWithinTheLimit) {
  EXPECT_NO_THROW(check_generate_prompt(" x ", 100));
  EXPECT_NO_THROW(check_generate_prompt(std::string(100, 'x'), 100));
  for (const char* p : {"", "  ", "\n\t"}) {
    try {
      check_generate_prompt(p, 100);
      ADD_FAILURE() << "accepted '" << p << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), "22023");
      EXPECT_STREQ(e.what(), "prompt must not be empty or blank");
    }
  }
  try {
    check_generate_prompt(std::string(101, 'x'), 100);
    ADD_FAILURE() << "accepted 101 bytes";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), "54000");
    EXPECT_STREQ(e.what(), "prompt is 101 bytes, more than npc_scale.max_prompt_bytes (100)");
  }
}

TEST(RequestCheckTest, PromptOverTheLimitNamesItsSize) {
  auto a = good();
  a.prompt = std::string(101, 'x');
  expect_error(a, "54000", "101 bytes, more than npc_scale.max_prompt_bytes (100)");
  a.prompt = std::string(100, 'x');
  EXPECT_NO_THROW(check_request(a, 100));
}

TEST(RequestCheckTest, PriorityRange) {
  auto a = good();
  for (int p : {0, 10}) {
    a.priority = p;
    EXPECT_NO_THROW(check_request(a, 100));
  }
  a.priority = 11;
  expect_error(a, "22003", "priority 11 is out of range");
  a.priority = -1;
  expect_error(a, "22003", "priority -1 is out of range");
  a.priority.reset();
  expect_error(a, "22004", "priority must not be null");
}

TEST(RequestCheckTest, DecisionTypeIsATagNotAText) {
  auto a = good();
  a.decision_type = std::string(64, 't');
  EXPECT_NO_THROW(check_request(a, 100));
  a.decision_type = std::string(65, 't');
  expect_error(a, "22001", "is 65 bytes, more than 64");
  // The value is shown cut short, never half a UTF-8 character.
  std::string accents;
  for (int i = 0; i < 40; i++) accents += "\xC3\xA9";  // é
  a.decision_type = accents;
  try {
    check_request(a, 100);
    FAIL() << "80 bytes accepted";
  } catch (const Error& e) {
    const std::string shown = std::string("'") + accents.substr(0, 40) + "…'";
    EXPECT_NE(std::string(e.what()).find(shown), std::string::npos) << e.what();
  }
}

TEST(RequestCheckTest, ANullInABatchNamesItsPosition) {
  auto a = good();
  a.npc_id.reset();
  a.position = 3;
  expect_error(a, "22004", "npc_ids[3] must not be null");
}

TEST(RequestCheckTest, ParamsAreHeldToThePromptLimit) {
  EXPECT_NO_THROW(npc_scale::check_params_size(100, 100));
  try {
    npc_scale::check_params_size(101, 100);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), "54000");
    EXPECT_STREQ(e.what(), "params are 101 bytes, more than npc_scale.max_prompt_bytes (100)");
  }
}

TEST(RequestCheckTest, DeadlinesAndTimeoutsAreWaitsNotOverflows) {
  EXPECT_NO_THROW(npc_scale::check_deadline_seconds(0.001));
  EXPECT_NO_THROW(npc_scale::check_deadline_seconds(npc_scale::kMaxDeadlineSeconds));
  EXPECT_NO_THROW(npc_scale::check_await_timeout_seconds(0));
  EXPECT_NO_THROW(npc_scale::check_await_timeout_seconds(npc_scale::kMaxAwaitSeconds));
  struct Case {
    void (*check)(double);
    double secs;
    const char* needle;
  };
  for (const Case& c : {Case{npc_scale::check_deadline_seconds, 0, "deadline of 0 s must be a positive"},
                        Case{npc_scale::check_deadline_seconds, -1, "deadline of -1 s"},
                        Case{npc_scale::check_deadline_seconds, 3.1e13, "deadline of 3.1e+13 s is more than a year"},
                        Case{npc_scale::check_await_timeout_seconds, -0.5, "timeout -0.5 s must not be negative"},
                        Case{npc_scale::check_await_timeout_seconds, 86401, "timeout 86401 s is more than a day"}}) {
    try {
      c.check(c.secs);
      ADD_FAILURE() << c.secs << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), "22023");
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
    }
  }
}
