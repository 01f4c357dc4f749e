// Bad input to request_decision(): every rule gives its SQLSTATE and names the value.
#include <gtest/gtest.h>

#include "error.hpp"
#include "request_check.hpp"

using npc_scale::check_request;
using npc_scale::Error;
using npc_scale::RequestArgs;

namespace {
RequestArgs good() { return RequestArgs{42, std::string("build"), std::string("What next?"), 5}; }

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

TEST(RequestCheckTest, EmptyOrNullDecisionType) {
  auto a = good();
  a.decision_type = "  ";
  expect_error(a, "22023", "decision_type must not be null or empty (got '  ')");
  a.decision_type.reset();
  expect_error(a, "22023", "(got NULL)");
}

TEST(RequestCheckTest, EmptyOrNullPrompt) {
  auto a = good();
  a.prompt = "";
  expect_error(a, "22023", "prompt for npc 42 must not be null or empty");
  a.prompt.reset();
  expect_error(a, "22023", "prompt for npc 42");
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
  expect_error(a, "22003", "priority NULL is out of range");
}
