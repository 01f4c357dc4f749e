// npc_scale::Error: the SQLSTATE it carries reaches Postgres intact, and a
// malformed one degrades to internal_error instead of garbage.
#include <gtest/gtest.h>

#include "error.hpp"

using npc_scale::Error;
namespace sqlstate = npc_scale::sqlstate;

TEST(ErrorTest, CarriesSqlstateMessageDetailHint) {
  Error e(sqlstate::invalid_parameter_value, "priority 11 is out of range", "must be 0..10", "use 5");
  EXPECT_EQ(e.sqlstate(), "22023");
  EXPECT_STREQ(e.what(), "priority 11 is out of range");
  EXPECT_EQ(e.detail(), "must be 0..10");
  EXPECT_EQ(e.hint(), "use 5");
}

TEST(ErrorTest, MalformedSqlstateBecomesInternalError) {
  EXPECT_EQ(Error("2202", "short").sqlstate(), sqlstate::internal_error);
  EXPECT_EQ(Error("22023x", "long").sqlstate(), sqlstate::internal_error);
  EXPECT_EQ(Error("2202a", "lower case").sqlstate(), sqlstate::internal_error);
  EXPECT_EQ(Error("", "empty").sqlstate(), sqlstate::internal_error);
}

TEST(ErrorTest, ValidatesTheSqlstateAlphabet) {
  EXPECT_TRUE(npc_scale::is_valid_sqlstate("22P02"));
  EXPECT_TRUE(npc_scale::is_valid_sqlstate("XX000"));
  EXPECT_FALSE(npc_scale::is_valid_sqlstate("22-02"));
  EXPECT_FALSE(npc_scale::is_valid_sqlstate("22 02"));
}

TEST(ErrorTest, IsAStdException) {
  try {
    throw Error(sqlstate::query_canceled, "canceled");
  } catch (const std::exception& e) {
    EXPECT_STREQ(e.what(), "canceled");
    return;
  }
  FAIL() << "not caught as std::exception";
}

TEST(ErrorTest, CopiesTextClippedAtACharacterBoundary) {
  char buf[6];
  npc_scale::copy_text_clipped(buf, sizeof buf, "abc");
  EXPECT_STREQ(buf, "abc");
  npc_scale::copy_text_clipped(buf, sizeof buf, "abcdefgh");
  EXPECT_STREQ(buf, "abcde");  // ASCII: every byte is a boundary
  // "ab" + é (2 bytes) + é: 5 bytes fit, the second é would be cut in half.
  npc_scale::copy_text_clipped(buf, sizeof buf, "ab\xc3\xa9\xc3\xa9");
  EXPECT_STREQ(buf, "ab\xc3\xa9");
  // A 4-byte character straddling the end goes whole.
  npc_scale::copy_text_clipped(buf, sizeof buf, "abc\xf0\x9f\x8e\xb2");
  EXPECT_STREQ(buf, "abc");
  // Exactly full: nothing cut.
  npc_scale::copy_text_clipped(buf, sizeof buf, "a\xf0\x9f\x8e\xb2");
  EXPECT_STREQ(buf, "a\xf0\x9f\x8e\xb2");
  char one[1];
  npc_scale::copy_text_clipped(one, sizeof one, "abc");
  EXPECT_STREQ(one, "");
}
