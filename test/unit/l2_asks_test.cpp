#include "l2_asks.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace npc_scale {
namespace {

L2Check check(uint64_t tag, int attempts = 0) {
  L2Check c;
  c.tag = tag;
  c.id = static_cast<int64_t>(tag) * 10;
  c.key = "k" + std::to_string(tag);
  c.xid = 700 + static_cast<uint32_t>(tag);
  c.attempts = attempts;
  return c;
}

constexpr int64_t kTimeout = 200;
constexpr int64_t kGrace = 1000;

TEST(L2Asks, AnAnswerGivesEachCheckItsOwnOutcomeInKeyOrder) {
  L2Asks book(kGrace);
  book.asked(1, {check(11), check(12, 1), check(13)}, 0);
  EXPECT_TRUE(book.waiting(11));
  EXPECT_TRUE(book.waiting(12));
  EXPECT_FALSE(book.waiting(14));

  auto out = book.take({L2Reply{1, {std::nullopt, std::string("cached")}}}, 5, kTimeout);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].check.tag, 11u);
  EXPECT_FALSE(out[0].hit);
  EXPECT_EQ(out[1].check.tag, 12u);
  EXPECT_EQ(out[1].check.attempts, 1);
  EXPECT_EQ(out[1].check.key, "k12");
  ASSERT_TRUE(out[1].hit);
  EXPECT_EQ(*out[1].hit, "cached");
  EXPECT_EQ(out[2].check.xid, 713u);
  EXPECT_FALSE(out[2].hit) << "a key the reply has no entry for is a miss";
  EXPECT_FALSE(book.waiting(11));
  EXPECT_FALSE(book.waiting(12));
  EXPECT_FALSE(book.waiting(13));
  EXPECT_EQ(book.pending_asks(), 0u);
}

TEST(L2Asks, AsksAreMatchedByTicketWhateverTheOrder) {
  L2Asks book(kGrace);
  book.asked(1, {check(1)}, 0);
  book.asked(2, {check(2)}, 0);
  auto out = book.take({L2Reply{2, {std::string("b")}}}, 1, kTimeout);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].check.tag, 2u);
  EXPECT_EQ(*out[0].hit, "b");
  EXPECT_TRUE(book.waiting(1));
  EXPECT_FALSE(book.waiting(2));
  EXPECT_TRUE(book.take({L2Reply{99, {std::string("x")}}}, 2, kTimeout).empty()) << "unknown ticket";
  EXPECT_TRUE(book.waiting(1));
}

TEST(L2Asks, AnAskNoAnswerCameBackForIsGivenUpAsMissesOnlyAfterTimeoutAndGrace) {
  L2Asks book(kGrace);
  book.asked(1, {check(1), check(2, 3)}, 100);
  book.asked(2, {check(3)}, 600);
  EXPECT_EQ(book.ms_until_give_up(100, kTimeout), kTimeout + kGrace);
  EXPECT_EQ(book.ms_until_give_up(1000, kTimeout), 300);

  EXPECT_TRUE(book.take({}, 100 + kTimeout + kGrace - 1, kTimeout).empty()) << "one ms early";
  EXPECT_TRUE(book.waiting(1));

  auto out = book.take({}, 100 + kTimeout + kGrace, kTimeout);
  ASSERT_EQ(out.size(), 2u);
  for (const L2Outcome& o : out) EXPECT_FALSE(o.hit);
  EXPECT_EQ(out[1].check.attempts, 3);
  EXPECT_FALSE(book.waiting(1));
  EXPECT_FALSE(book.waiting(2));
  EXPECT_TRUE(book.waiting(3)) << "the younger ask is not due";
  EXPECT_EQ(book.ms_until_give_up(100 + kTimeout + kGrace, kTimeout), 500);
}

TEST(L2Asks, AnAnswerArrivingAfterTheAskWasGivenUpIsIgnored) {
  // Each check gets exactly one outcome: a late hit must not withdraw or
  // answer a request that already went on as a miss.
  L2Asks book(kGrace);
  book.asked(7, {check(70)}, 0);
  auto given_up = book.take({}, kTimeout + kGrace, kTimeout);
  ASSERT_EQ(given_up.size(), 1u);
  EXPECT_TRUE(book.take({L2Reply{7, {std::string("late")}}}, kTimeout + kGrace + 1, kTimeout).empty());
  EXPECT_EQ(book.ms_until_give_up(0, kTimeout), -1);
}

TEST(L2Asks, AnAnsweredAskIsNotGivenUpToo) {
  L2Asks book(kGrace);
  book.asked(1, {check(1)}, 0);
  // Answered in the same take that would also have given it up.
  auto out = book.take({L2Reply{1, {std::string("v")}}}, 10 * kGrace, kTimeout);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].hit);
  EXPECT_TRUE(book.take({}, 20 * kGrace, kTimeout).empty());
  EXPECT_EQ(book.pending_asks(), 0u);
}

TEST(L2Asks, AReleasedRequestStopsWaitingButItsAskIsStillAnswered) {
  L2Asks book(kGrace);
  book.asked(1, {check(1), check(2)}, 0);
  book.release(1);
  EXPECT_FALSE(book.waiting(1));
  EXPECT_TRUE(book.waiting(2));
  auto out = book.take({L2Reply{1, {std::nullopt, std::nullopt}}}, 1, kTimeout);
  EXPECT_EQ(out.size(), 2u);
  EXPECT_FALSE(book.waiting(2));
}

TEST(L2Asks, NothingPendingMeansNoDeadline) {
  L2Asks book(kGrace);
  EXPECT_EQ(book.ms_until_give_up(0, kTimeout), -1);
  EXPECT_TRUE(book.take({}, 0, kTimeout).empty());
}

}  // namespace
}  // namespace npc_scale
