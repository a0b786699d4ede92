#include "core/ingest/internal/replay_slots.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;

// Holders are the addresses of these; `granted` records who was told, in order.
class ReplaySlotsTest : public ::testing::Test {
 protected:
  bool Ask(ReplaySlots& slots, int who, bool urgent = false) {
    return slots.Acquire(&holders_[who], urgent, [this, who] { granted_.push_back(who); });
  }
  const void* H(int who) const { return &holders_[who]; }

  int holders_[8] = {};
  std::vector<int> granted_;
};

TEST_F(ReplaySlotsTest, GivesFreeSlotsAtOnceAndHoldsAreIdempotent) {
  ReplaySlots slots(2);
  EXPECT_TRUE(Ask(slots, 0));
  EXPECT_TRUE(Ask(slots, 1));
  EXPECT_TRUE(Ask(slots, 0));  // held already
  EXPECT_EQ(slots.held(), 2u);
  EXPECT_TRUE(slots.Holds(H(0)));
  EXPECT_FALSE(Ask(slots, 2));
  EXPECT_EQ(slots.waiting(), 1u);
  EXPECT_TRUE(granted_.empty());
}

TEST_F(ReplaySlotsTest, AReleasedSlotGoesToTheFirstInLineAndTellsIt) {
  ReplaySlots slots(1);
  ASSERT_TRUE(Ask(slots, 0));
  EXPECT_FALSE(Ask(slots, 1));
  EXPECT_FALSE(Ask(slots, 2));
  slots.Release(H(0));
  EXPECT_THAT(granted_, ElementsAre(1));
  EXPECT_TRUE(slots.Holds(H(1)));
  EXPECT_FALSE(slots.Holds(H(0)));
  EXPECT_TRUE(Ask(slots, 1));  // now its own
  slots.Release(H(1));
  EXPECT_THAT(granted_, ElementsAre(1, 2));
  slots.Release(H(2));
  EXPECT_EQ(slots.held(), 0u);
  EXPECT_EQ(slots.waiting(), 0u);
  EXPECT_TRUE(Ask(slots, 3));
}

TEST_F(ReplaySlotsTest, UrgentWaitersGoFirstAndAskingAgainCanMakeOneUrgent) {
  ReplaySlots slots(1);
  ASSERT_TRUE(Ask(slots, 0));
  EXPECT_FALSE(Ask(slots, 1));
  EXPECT_FALSE(Ask(slots, 2));
  EXPECT_FALSE(Ask(slots, 3, /*urgent=*/true));
  EXPECT_FALSE(Ask(slots, 2, /*urgent=*/true));  // its engine was heard from meanwhile
  EXPECT_FALSE(Ask(slots, 1));                    // asking again keeps its place
  EXPECT_EQ(slots.waiting(), 3u);
  for (int who : {0, 3, 2, 1}) slots.Release(H(who));
  EXPECT_THAT(granted_, ElementsAre(3, 2, 1));  // each told once
  EXPECT_EQ(slots.held(), 0u);
}

TEST_F(ReplaySlotsTest, AWaiterThatLeavesIsNeverGiven) {
  ReplaySlots slots(1);
  ASSERT_TRUE(Ask(slots, 0));
  EXPECT_FALSE(Ask(slots, 1));
  EXPECT_FALSE(Ask(slots, 2));
  slots.Release(H(1));  // e.g. its worker was removed
  EXPECT_EQ(slots.waiting(), 1u);
  slots.Release(H(0));
  EXPECT_THAT(granted_, ElementsAre(2));
  slots.Release(H(5));  // neither holds nor waits: nothing happens
  EXPECT_EQ(slots.held(), 1u);
}

TEST_F(ReplaySlotsTest, ALineOfWaitersComingAndGoingStaysInOrder) {
  // Many waiters leave before their turn (stale entries are dropped along the
  // way); those that stay are served in order.
  ReplaySlots slots(1);
  std::vector<int> stay;
  int held = 0;
  ASSERT_TRUE(slots.Acquire(&held, false, {}));
  std::vector<int> many(1000);
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 1000; ++i) {
      EXPECT_FALSE(slots.Acquire(&many[i], false, [] {}));
    }
    for (int i = 0; i < 1000; ++i) slots.Release(&many[i]);
  }
  EXPECT_EQ(slots.waiting(), 0u);
  EXPECT_FALSE(Ask(slots, 4));
  EXPECT_FALSE(Ask(slots, 5));
  slots.Release(&held);
  slots.Release(H(4));
  EXPECT_THAT(granted_, ElementsAre(4, 5));
}

TEST(ReplaySlotsCountTest, AtLeastOneSlot) {
  ReplaySlots slots(0);
  EXPECT_EQ(slots.slots(), 1u);
  int a = 0;
  EXPECT_TRUE(slots.Acquire(&a, false, {}));
}

}  // namespace
}  // namespace kvindex
