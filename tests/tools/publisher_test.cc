#include "tools/sim/publisher.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/wait.h"
#include "tests/tools/zmq_test_util.h"

namespace kvindex::sim {
namespace {

using ::kvindex::sim::testing::Frames;
using ::kvindex::sim::testing::Recv;
using ::kvindex::sim::testing::Replay;
using ::kvindex::sim::testing::SeqBytes;
using ::kvindex::sim::testing::SeqOf;
using ::kvindex::testutil::WaitFor;
using ::testing::ElementsAre;
using ::testing::SizeIs;

constexpr auto kShort = std::chrono::milliseconds(10);

std::unique_ptr<Publisher> Make(zmq::context_t& context, PublisherOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Publisher>> p = Publisher::Create(context, std::move(options));
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

// Publishes "<prefix><seq>" until `sub` receives a message (the SUB joins late);
// returns that message.
Frames PublishUntilReceived(Publisher& p, zmq::socket_t& sub, const std::string& prefix) {
  for (int i = 0; i < 500; ++i) {
    EXPECT_TRUE(p.Publish(prefix + std::to_string(p.next_seq())).ok());
    if (auto frames = Recv(sub, kShort)) return *frames;
  }
  ADD_FAILURE() << "the SUB never received anything";
  return {};
}

TEST(PublisherTest, SendsExactlyThreeFramesWithBigEndianSeqFromZero) {
  zmq::context_t context;
  PublisherOptions o;
  o.topic = "kv@127.0.0.1@m";
  auto p = Make(context, o);
  ASSERT_NE(p, nullptr);
  EXPECT_NE(p->events_port(), 0u);
  ASSERT_TRUE(p->replay_port().has_value());
  auto sub = testing::Sub(context, p->events_port());
  Frames first = PublishUntilReceived(*p, sub, "payload-");
  ASSERT_THAT(first, SizeIs(3));
  EXPECT_EQ(first[0], "kv@127.0.0.1@m");
  ASSERT_TRUE(SeqOf(first[1]).has_value());
  EXPECT_EQ(first[2], "payload-" + std::to_string(*SeqOf(first[1])));
  // From here on, every batch arrives (those published while waiting too), in order, seq +1 each.
  const uint64_t next = p->next_seq();
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(p->Publish("more").ok());
  for (uint64_t seq = *SeqOf(first[1]) + 1; seq < next + 5; ++seq) {
    auto frames = Recv(sub, std::chrono::seconds(2));
    ASSERT_TRUE(frames.has_value());
    ASSERT_THAT(*frames, SizeIs(3));
    EXPECT_EQ(SeqOf((*frames)[1]), seq);
  }
  EXPECT_FALSE(Recv(sub, kShort).has_value());
  // The batches the SUB missed joining are replayable from 0.
  auto dealer = testing::Dealer(context, *p->replay_port());
  auto replies = Replay(dealer, 0, [&] { ASSERT_TRUE(p->ServeReplay().ok()); });
  ASSERT_THAT(replies, SizeIs(next + 5 + 1));
  for (uint64_t s = 0; s < next + 5; ++s) {
    ASSERT_THAT(replies[s], SizeIs(3));
    EXPECT_EQ(replies[s][0], "");
    EXPECT_EQ(SeqOf(replies[s][1]), s);
  }
  EXPECT_EQ(replies[0][2], "payload-0");
  EXPECT_THAT(replies.back(), ElementsAre("", SeqBytes(~uint64_t{0}), ""));
  EXPECT_EQ(p->counters().batches, next + 5);
  EXPECT_EQ(p->counters().replay_requests, 1u);
}

TEST(PublisherTest, ReplayAnswersInBothFormsFromTheAskedSeq) {
  zmq::context_t context;
  for (ReplyForm form : {ReplyForm::kSeqPayload, ReplyForm::kTopicSeqPayload}) {
    PublisherOptions o;
    o.topic = "t";
    o.reply_form = form;
    auto p = Make(context, o);
    ASSERT_NE(p, nullptr);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(p->Publish("b" + std::to_string(i)).ok());
    auto dealer = testing::Dealer(context, *p->replay_port());
    auto serve = [&] { ASSERT_TRUE(p->ServeReplay().ok()); };
    auto replies = Replay(dealer, 3, serve);
    if (form == ReplyForm::kSeqPayload) {
      EXPECT_THAT(replies, ElementsAre(ElementsAre("", SeqBytes(3), "b3"), ElementsAre("", SeqBytes(4), "b4"),
                                       ElementsAre("", SeqBytes(~uint64_t{0}), "")));
    } else {
      EXPECT_THAT(replies, ElementsAre(ElementsAre("", "t", SeqBytes(3), "b3"), ElementsAre("", "t", SeqBytes(4), "b4"),
                                       ElementsAre("", "", SeqBytes(~uint64_t{0}), "")));
    }
    // Nothing at or after the asked seq: only the end marker.
    EXPECT_THAT(Replay(dealer, 9, serve), SizeIs(1));
  }
}

TEST(PublisherTest, ReplayBufferKeepsTheLastBatchesOnly) {
  zmq::context_t context;
  PublisherOptions o;
  o.replay_buffer_batches = 3;
  auto p = Make(context, o);
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(p->Publish("b" + std::to_string(i)).ok());
  auto dealer = testing::Dealer(context, *p->replay_port());
  auto replies = Replay(dealer, 0, [&] { ASSERT_TRUE(p->ServeReplay().ok()); });
  ASSERT_THAT(replies, SizeIs(4));
  // The first seq answered is above the one asked: the gap fell out of the buffer.
  EXPECT_EQ(SeqOf(replies[0][1]), 4u);
  EXPECT_EQ(replies[2][2], "b6");
}

TEST(PublisherTest, MalformedReplayRequestsAreDroppedAndCounted) {
  zmq::context_t context;
  auto p = Make(context);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->Publish("b0").ok());
  auto dealer = testing::Dealer(context, *p->replay_port());
  dealer.send(zmq::message_t(), zmq::send_flags::sndmore);
  dealer.send(zmq::str_buffer("abc"), zmq::send_flags::none);  // not 8 bytes
  dealer.send(zmq::str_buffer("no delimiter"), zmq::send_flags::none);
  WaitFor(
      [&] {
        if (p->counters().bad_requests >= 2) return true;
        EXPECT_TRUE(p->ServeReplay().ok());
        return false;
      },
      absl::Seconds(5));
  EXPECT_EQ(p->counters().bad_requests, 2u);
  EXPECT_FALSE(Recv(dealer, kShort).has_value());
  EXPECT_THAT(Replay(dealer, 0, [&] { ASSERT_TRUE(p->ServeReplay().ok()); }), SizeIs(2));
}

TEST(PublisherTest, NoReplaySocketWhenDisabled) {
  zmq::context_t context;
  PublisherOptions o;
  o.replay = false;
  auto p = Make(context, o);
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(p->replay_port().has_value());
  EXPECT_EQ(p->ReplayPollItem().socket, nullptr);
  EXPECT_TRUE(p->ServeReplay().ok());
}

TEST(PublisherTest, BindingATakenPortIsUnavailable) {
  zmq::context_t context;
  auto first = Make(context);
  ASSERT_NE(first, nullptr);
  PublisherOptions o;
  o.events_port = first->events_port();
  o.replay = false;
  absl::StatusOr<std::unique_ptr<Publisher>> second = Publisher::Create(context, o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr("bind tcp://127.0.0.1:" + std::to_string(first->events_port())));
}

// An engine restart: seq starts again at 0, the old batches are gone from the
// replay buffer, and (rebinding) subscribers reconnect by themselves.
class PublisherRestartTest : public ::testing::TestWithParam<bool> {};

TEST_P(PublisherRestartTest, RestartResetsSeqAndReplayBuffer) {
  const bool rebind = GetParam();
  zmq::context_t context;
  auto p = Make(context);
  ASSERT_NE(p, nullptr);
  const uint32_t events_port = p->events_port();
  const uint32_t replay_port = *p->replay_port();
  auto sub = testing::Sub(context, events_port);
  PublishUntilReceived(*p, sub, "old-");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(p->Publish("old").ok());
  const uint64_t last_old = p->next_seq() - 1;
  while (true) {  // everything old has arrived
    auto frames = Recv(sub, std::chrono::seconds(2));
    ASSERT_TRUE(frames.has_value());
    if (SeqOf((*frames)[1]) == last_old) break;
  }

  ASSERT_TRUE(p->Restart(rebind).ok());
  EXPECT_EQ(p->next_seq(), 0u);
  EXPECT_EQ(p->events_port(), events_port);
  EXPECT_EQ(p->replay_port(), replay_port);
  Frames after = PublishUntilReceived(*p, sub, "new-");
  ASSERT_THAT(after, SizeIs(3));
  const uint64_t seq = *SeqOf(after[1]);
  EXPECT_LT(seq, last_old);  // seq went backwards: a subscriber sees the restart
  EXPECT_EQ(after[2], "new-" + std::to_string(seq));
  if (!rebind) {
    EXPECT_EQ(seq, 0u);
  }

  auto dealer = testing::Dealer(context, replay_port);
  auto replies = Replay(dealer, 0, [&] { ASSERT_TRUE(p->ServeReplay().ok()); });
  ASSERT_THAT(replies, SizeIs(p->next_seq() + 1));  // only the new incarnation's batches
  EXPECT_EQ(replies[0][2], "new-0");
  EXPECT_EQ(p->counters().restarts, 1u);
}

INSTANTIATE_TEST_SUITE_P(Rebind, PublisherRestartTest, ::testing::Bool());

}  // namespace
}  // namespace kvindex::sim
