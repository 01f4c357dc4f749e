// The handoff's claim rules: nothing is claimed or answered before its
// transaction is known to have committed; an aborted one is dropped; an
// answer that comes within the claim delay makes the claim unnecessary.
#include <gtest/gtest.h>

#include "handoff_policy.hpp"

using namespace npc_scale;

namespace {
const HandoffTiming kT{5, 1, 50};
}

TEST(HandoffPolicyTest, InsideTheDelayAnUnansweredRequestNeedsNoOutcome) {
  EXPECT_FALSE(handoff_needs_outcome(false, 100, 100, kT));
  EXPECT_FALSE(handoff_needs_outcome(false, 100, 104, kT));
  EXPECT_TRUE(handoff_needs_outcome(false, 100, 105, kT));
}

TEST(HandoffPolicyTest, AnAnsweredRequestNeedsItsOutcomeAtOnce) {
  EXPECT_TRUE(handoff_needs_outcome(true, 100, 100, kT));
}

TEST(HandoffPolicyTest, NothingHappensWhileTheTransactionIsCommitting) {
  EXPECT_EQ(handoff_step(false, TxnOutcome::in_progress), HandoffStep::wait);
  EXPECT_EQ(handoff_step(true, TxnOutcome::in_progress), HandoffStep::wait);
}

TEST(HandoffPolicyTest, CommittedAndAnsweredIsWrittenWithoutAClaim) {
  EXPECT_EQ(handoff_step(true, TxnOutcome::committed), HandoffStep::answer_directly);
}

TEST(HandoffPolicyTest, CommittedAndStillInFlightIsClaimed) {
  EXPECT_EQ(handoff_step(false, TxnOutcome::committed), HandoffStep::claim);
}

TEST(HandoffPolicyTest, AnAbortedTransactionIsDroppedAnsweredOrNot) {
  EXPECT_EQ(handoff_step(false, TxnOutcome::aborted), HandoffStep::drop);
  EXPECT_EQ(handoff_step(true, TxnOutcome::aborted), HandoffStep::drop);
}

TEST(HandoffPolicyTest, NextLookIsTheEndOfTheDelayThenThePollInterval) {
  EXPECT_EQ(handoff_next_look_ms(false, 100, 101, kT), 4);
  EXPECT_EQ(handoff_next_look_ms(false, 100, 105, kT), 1);
  EXPECT_EQ(handoff_next_look_ms(false, 100, 115, kT), 1);
  EXPECT_EQ(handoff_next_look_ms(true, 100, 101, kT), 1);
}

TEST(HandoffPolicyTest, ALongCommitIsPolledLessAndLessOften) {
  EXPECT_EQ(handoff_next_look_ms(false, 100, 180, kT), 10);
  EXPECT_EQ(handoff_next_look_ms(true, 100, 500, kT), 50);
  EXPECT_EQ(handoff_next_look_ms(true, 100, 100000, kT), 50);
  EXPECT_EQ(commit_look_interval_ms(0, kT), 1);
  EXPECT_EQ(commit_look_interval_ms(15, kT), 1);
  EXPECT_EQ(commit_look_interval_ms(16, kT), 2);
  EXPECT_EQ(commit_look_interval_ms(399, kT), 49);
  EXPECT_EQ(commit_look_interval_ms(1 << 30, kT), 50);
  EXPECT_EQ(commit_look_interval_ms(-5, kT), 1);  // a clock read out of order
}
