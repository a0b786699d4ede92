#include "core/ingest/internal/subscriber.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "core/index/prefix_index.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/replay_slots.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/ingest/fake_engine.h"
#include "tests/testing/dead_port.h"
#include "tests/testing/wait.h"

namespace kvindex {
namespace {

using ::kvindex::testing::ChainBlockPayload;
using ::kvindex::testing::FakeEngine;
using ::kvindex::testing::FakeEngineOptions;
using ::kvindex::testing::PayloadBuilder;
using ::kvindex::testing::PromptTokens;
using ::kvindex::testing::ReplayForm;
using ::kvindex::testutil::DeadPort;
using ::kvindex::testutil::WaitFor;

constexpr uint32_t kBlockSize = 4;
constexpr char kModel[] = "llama";
constexpr char kPod[] = "ns/vllm-0";

std::unique_ptr<FakeEngine> StartEngine(FakeEngineOptions options = {}) {
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// One Subscriber on its own IoThread, feeding a real PrefixIndex.
class SubscriberTest : public ::testing::Test {
 protected:
  void TearDown() override { io_.Stop(); }

  // `catch_up_after`: none unless asked, as most tests count replays exactly.
  void Subscribe(FakeEngine& engine, bool with_replay = true,
                 absl::Duration catch_up_after = absl::InfiniteDuration()) {
    SubscriberConfig config;
    config.catch_up_after = catch_up_after;
    config.worker = WorkerKey{kPod, 0};
    config.context = WorkerContext{kModel, ""};
    config.events_endpoint = TcpEndpoint(engine.host(), engine.events_port());
    if (with_replay) config.replay_endpoint = TcpEndpoint(engine.host(), engine.replay_port());
    config.replay_timeout = absl::Milliseconds(300);
    absl::Notification done;
    io_.Post([&](IoThread& io) {
      absl::StatusOr<std::unique_ptr<Subscriber>> subscriber =
          Subscriber::Create(io.context(), config, &index_, cell_);
      EXPECT_TRUE(subscriber.ok()) << subscriber.status();
      if (subscriber.ok()) io.AddTask(1, *std::move(subscriber));
      done.Notify();
    });
    done.WaitForNotification();
    // The SUB's subscription reached the engine: nothing published from now on is lost.
    ASSERT_TRUE(engine.WaitForSubscribers(1, absl::Seconds(10)));
    // The first-subscribe replay is over.
    ASSERT_TRUE(WaitFor([&] { return Status().state != WorkerState::kReplaying; }));
  }

  // Leading blocks of the canonical 16-block prompt the worker holds.
  uint32_t Matched() const {
    std::vector<uint32_t> tokens = PromptTokens(16, kBlockSize);
    MatchQuery query;
    query.model = kModel;
    query.token_ids = tokens;
    absl::StatusOr<MatchResult> result = index_.Match(query);
    if (!result.ok()) return 0;
    for (const WorkerMatch& m : result->workers) {
      if (m.worker == WorkerKey{kPod, 0}) return m.matched_blocks;
    }
    return 0;
  }

  WorkerStatus Status() const { return cell_->Get(); }

  PrefixIndex index_;
  ReplaySlots slots_{1};  // outlives the subscribers (TearDown stops io_ first)
  zmq::context_t context_{1};
  IoThread io_{context_, "test-io"};
  std::shared_ptr<WorkerStatusCell> cell_ = std::make_shared<WorkerStatusCell>(0);
};

TEST_F(SubscriberTest, NormalFlowReachesTheIndex) {
  auto engine = StartEngine();
  Subscribe(*engine);
  for (uint32_t k = 0; k < 10; ++k) engine->Publish(ChainBlockPayload(k, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 10; })) << Matched();
  ASSERT_TRUE(WaitFor([&] { return Status().last_seq == 9; }));
  WorkerStatus status = Status();
  EXPECT_EQ(status.state, WorkerState::kLive);
  EXPECT_EQ(status.batches, 10u);
  EXPECT_EQ(status.events, 10u);
  EXPECT_EQ(status.gaps, 0u);
  EXPECT_EQ(status.replays_ok, 1u);  // the first-subscribe replay, empty
  EXPECT_EQ(status.last_event_ts, 1700000000.0);
}

TEST_F(SubscriberTest, FirstSubscribeReplaysFromZero) {
  auto engine = StartEngine();
  for (uint32_t k = 0; k < 5; ++k) engine->Publish(ChainBlockPayload(k, kBlockSize));  // nobody listens
  Subscribe(*engine);
  ASSERT_TRUE(WaitFor([&] { return Matched() == 5; })) << Matched();
  EXPECT_GE(engine->replay_requests(), 1u);
  engine->Publish(ChainBlockPayload(5, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 6; })) << Matched();
}

// ZeroMQ's slow joiner: a batch the engine published after answering the
// warm start that never reached the SUB (PublishLost: buffered for replay, not
// sent), then silence. The catch-up replay brings it without a next batch to
// reveal the gap.
TEST_F(SubscriberTest, ABatchTheLiveStreamMissedAfterTheWarmStartIsCaughtUp) {
  auto engine = StartEngine();
  for (uint32_t k = 0; k < 3; ++k) engine->Publish(ChainBlockPayload(k, kBlockSize));
  Subscribe(*engine, /*with_replay=*/true, /*catch_up_after=*/absl::Seconds(3));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 3; })) << Matched();
  engine->PublishLost(ChainBlockPayload(3, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 4; })) << Matched();
  // The status is published once the catch-up replay is over, just after its batches reach the index.
  ASSERT_TRUE(WaitFor([&] { return Status().state == WorkerState::kLive && Status().last_seq == 3; }));
  const WorkerStatus status = Status();
  EXPECT_EQ(status.gaps, 0u);
  EXPECT_EQ(status.uncovered_gaps, 0u);
  EXPECT_EQ(status.replays_ok, 2u);  // the warm start and the catch-up
  EXPECT_TRUE(status.history_complete);
}

class SubscriberReplayFormTest : public SubscriberTest,
                                 public ::testing::WithParamInterface<ReplayForm> {};

TEST_P(SubscriberReplayFormTest, GapIsRecoveredByReplay) {
  FakeEngineOptions options;
  options.replay_form = GetParam();
  options.topic = "kv@127.0.0.1@llama";
  auto engine = StartEngine(options);
  Subscribe(*engine);
  engine->Publish(ChainBlockPayload(0, kBlockSize));
  engine->Publish(ChainBlockPayload(1, kBlockSize));
  engine->PublishLost(ChainBlockPayload(2, kBlockSize));  // dropped by the PUB queue
  engine->PublishLost(ChainBlockPayload(3, kBlockSize));
  engine->Publish(ChainBlockPayload(4, kBlockSize));
  engine->Publish(ChainBlockPayload(5, kBlockSize));
  // Without blocks 2 and 3, blocks 4 and 5 could not chain: 6 means the replay was applied in order.
  ASSERT_TRUE(WaitFor([&] { return Matched() == 6; })) << Matched();
  ASSERT_TRUE(WaitFor([&] { return Status().last_seq == 5; }));
  WorkerStatus status = Status();
  EXPECT_EQ(status.gaps, 1u);
  EXPECT_EQ(status.uncovered_gaps, 0u);
  EXPECT_EQ(status.replays_ok, 2u);
  EXPECT_EQ(status.replays_failed, 0u);
  EXPECT_EQ(status.batches, 6u);
}

INSTANTIATE_TEST_SUITE_P(BothReplyForms, SubscriberReplayFormTest,
                         ::testing::Values(ReplayForm::kThreeFrames, ReplayForm::kFourFrames));

TEST_F(SubscriberTest, GapBeyondTheEngineBufferClearsTheWorker) {
  auto engine = StartEngine();
  Subscribe(*engine);
  for (uint32_t k = 0; k < 3; ++k) engine->Publish(ChainBlockPayload(k, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 3; }));
  engine->PublishLost(ChainBlockPayload(3, kBlockSize));
  engine->PublishLost(ChainBlockPayload(4, kBlockSize));
  engine->ForgetBefore(5);  // 3 and 4 fell out of the engine's buffer
  engine->Publish(ChainBlockPayload(5, kBlockSize));
  // The replay's first batch (seq 5) shows the gap is uncovered; its end marker,
  // maybe a poll later, counts the failed replay.
  ASSERT_TRUE(WaitFor([&] {
    const WorkerStatus s = Status();
    return s.uncovered_gaps == 1 && s.last_seq == 5 && s.replays_failed == 1;
  })) << Status().replays_failed;
  EXPECT_EQ(Matched(), 0u);  // the worker was cleared; block 5 cannot chain to anything
  std::optional<WorkerStats> stats = index_.GetWorkerStats(WorkerKey{kPod, 0});
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->blocks, 0u);
}

// An engine whose replay socket was silent when kvindex subscribed: the
// worker goes on live, the warm start is asked again, and once the engine
// answers, the worker holds what the engine published before the subscription.
TEST_F(SubscriberTest, AWarmStartTheEngineDidNotAnswerIsAskedAgain) {
  auto engine = StartEngine();
  for (uint32_t k = 0; k < 3; ++k) engine->PublishLost(ChainBlockPayload(k, kBlockSize));  // before kvindex came
  engine->SetReplayMuted(true);
  Subscribe(*engine);  // returns once the warm start timed out
  engine->Publish(ChainBlockPayload(3, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Status().last_seq == 3; }));
  EXPECT_FALSE(Status().history_complete);
  EXPECT_EQ(Matched(), 0u);  // block 3 alone chains to nothing kvindex knows
  engine->SetReplayMuted(false);
  // The status is published at the end of a turn, after the replay's end marker.
  ASSERT_TRUE(WaitFor([&] {
    const WorkerStatus s = Status();
    return s.replays_ok == 1 && s.state == WorkerState::kLive;
  })) << Status().replays_ok;
  EXPECT_EQ(Matched(), 4u);
  const WorkerStatus status = Status();
  EXPECT_TRUE(status.history_complete);
  EXPECT_EQ(status.last_seq, 3);
  EXPECT_GE(status.replays_failed, 1u);
  EXPECT_GE(engine->replay_requests(), 2u);
}

TEST_F(SubscriberTest, UnansweredReplayTimesOutAndClears) {
  auto engine = StartEngine();
  Subscribe(*engine);
  engine->Publish(ChainBlockPayload(0, kBlockSize));
  engine->Publish(ChainBlockPayload(1, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 2; }));
  engine->SetReplayMuted(true);
  engine->PublishLost(ChainBlockPayload(2, kBlockSize));
  engine->Publish(ChainBlockPayload(3, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Status().uncovered_gaps == 1 && Status().last_seq == 3; }));
  EXPECT_EQ(Matched(), 0u);
  EXPECT_EQ(Status().replays_failed, 1u);
  // The subscription stays up: a fresh prompt is indexed again.
  engine->Restart();
  engine->SetReplayMuted(false);
  engine->Publish(ChainBlockPayload(0, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 1; }));
}

TEST_F(SubscriberTest, GapWithoutReplayEndpointClears) {
  FakeEngineOptions options;
  options.replay = false;
  auto engine = StartEngine(options);
  Subscribe(*engine, /*with_replay=*/false);
  engine->Publish(ChainBlockPayload(0, kBlockSize));
  engine->Publish(ChainBlockPayload(1, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 2; }));
  engine->PublishLost(ChainBlockPayload(2, kBlockSize));
  engine->Publish(ChainBlockPayload(3, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Status().uncovered_gaps == 1 && Status().last_seq == 3; }));
  EXPECT_EQ(Matched(), 0u);
  EXPECT_EQ(Status().gaps, 1u);
}

TEST_F(SubscriberTest, EngineRestartClearsTheWorker) {
  auto engine = StartEngine();
  Subscribe(*engine);
  for (uint32_t k = 0; k < 4; ++k) engine->Publish(ChainBlockPayload(k, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 4; }));
  engine->Restart();  // seq counts from 0 again, cache empty
  engine->Publish(ChainBlockPayload(0, kBlockSize));
  engine->Publish(ChainBlockPayload(1, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Status().restarts == 1 && Status().last_seq == 1; }));
  EXPECT_EQ(Matched(), 2u);  // blocks 2 and 3 of the old process are gone
  std::optional<WorkerStats> stats = index_.GetWorkerStats(WorkerKey{kPod, 0});
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->blocks, 2u);
}

TEST_F(SubscriberTest, MalformedFramesAndPayloadsAreSkipped) {
  auto engine = StartEngine();
  Subscribe(*engine);
  engine->Publish(ChainBlockPayload(0, kBlockSize));                       // seq 0
  engine->SendRaw({"", std::string(8, '\0')});                             // 2 frames
  engine->SendRaw({"", std::string(8, '\0'), "x", "y"});                   // 4 frames
  engine->SendRaw({"", std::string(7, '\1'), ChainBlockPayload(9, 4)});    // 7-byte seq
  engine->SendRaw({"only-one-frame"});
  engine->Publish("\xc1\xc1 not msgpack");                                  // seq 1: undecodable
  engine->Publish(ChainBlockPayload(1, kBlockSize));                       // seq 2
  engine->Publish(PayloadBuilder().Unknown().Build());                     // seq 3: unknown tag only
  std::string truncated = ChainBlockPayload(2, kBlockSize);
  truncated.resize(truncated.size() - 3);
  engine->Publish(truncated);                                              // seq 4: truncated
  const std::vector<uint32_t> prompt = PromptTokens(3, kBlockSize);
  engine->Publish(PayloadBuilder(testing::EventForm::kMap)                 // seq 5: map form
                      .Unknown()
                      .Stored({testing::kChainHashBase + 2}, testing::kChainHashBase + 1,
                              std::vector<uint32_t>(prompt.begin() + 2 * kBlockSize, prompt.end()),
                              kBlockSize)
                      .Build());
  engine->Publish(ChainBlockPayload(3, kBlockSize));                       // seq 6
  ASSERT_TRUE(WaitFor([&] { return Status().last_seq == 6; }));
  EXPECT_EQ(Matched(), 4u);
  WorkerStatus status = Status();
  EXPECT_EQ(status.bad_frames, 4u);
  EXPECT_EQ(status.decode_errors, 2u);
  EXPECT_EQ(status.batches, 5u);
  EXPECT_EQ(status.gaps, 0u);
  EXPECT_EQ(status.state, WorkerState::kLive);
}

// What the index could not apply (removals of blocks the worker never held,
// blocks whose parent it does not know) is counted in the worker's status.
TEST_F(SubscriberTest, WhatTheIndexCouldNotApplyReachesTheStatus) {
  auto engine = StartEngine();
  Subscribe(*engine);
  engine->Publish(PayloadBuilder().Removed({0x5eed, 0x5eee}).Build());
  engine->Publish(PayloadBuilder().Stored({0x77}, /*parent=*/0x1234, PromptTokens(1, kBlockSize), kBlockSize).Build());
  ASSERT_TRUE(WaitFor([&] { return Status().batches == 2; }));
  const WorkerStatus status = Status();
  EXPECT_EQ(status.unknown_removals, 2u);
  EXPECT_EQ(status.blocks_unindexed, 1u);
  EXPECT_EQ(status.unknown_chunks, 0u);
}

// Without an engine the worker stays kConnecting however often ZeroMQ retries
// (never kLive, never kFailed) and the subscription keeps trying: once an
// engine appears on the port, it connects and indexes its blocks.
TEST_F(SubscriberTest, StaysConnectingWithoutAnEngine) {
  // Refused while the worker waits; the engine then takes the port over (ZeroMQ sets SO_REUSEADDR too).
  absl::StatusOr<std::unique_ptr<DeadPort>> reserved = DeadPort::Bind(DeadPort::Takeover::kByReuseAddr);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  SubscriberConfig config;
  config.worker = WorkerKey{kPod, 0};
  config.context = WorkerContext{kModel, ""};
  config.events_endpoint = TcpEndpoint("127.0.0.1", (*reserved)->port());
  ZmqTuning tuning;
  tuning.reconnect_ivl_ms = 5;  // retry often, without backing off
  tuning.reconnect_ivl_max_ms = 5;
  absl::Notification done;
  io_.Post([&](IoThread& io) {
    auto subscriber = Subscriber::Create(io.context(), config, &index_, cell_, tuning);
    ASSERT_TRUE(subscriber.ok()) << subscriber.status();
    io.AddTask(1, *std::move(subscriber));
    done.Notify();
  });
  done.WaitForNotification();
  // Dozens of refused connections, each followed by a pass of the I/O thread
  // (a task posted behind the subscriber's poll has run) that would publish
  // any state change.
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // two retry intervals
    absl::Notification passed;
    io_.Post([&](IoThread&) { passed.Notify(); });
    ASSERT_TRUE(passed.WaitForNotificationWithTimeout(absl::Seconds(10)));
    const WorkerStatus status = Status();
    ASSERT_EQ(status.state, WorkerState::kConnecting) << "after " << i + 1 << " passes";
    EXPECT_EQ(status.batches, 0u);
  }

  FakeEngineOptions options;
  options.events_port = (*reserved)->port();
  options.replay = false;
  auto engine = StartEngine(options);
  ASSERT_NE(engine, nullptr);
  ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(10)));
  EXPECT_EQ(Status().state, WorkerState::kConnecting);  // connected, but not heard from yet
  engine->Publish(ChainBlockPayload(0, kBlockSize));
  ASSERT_TRUE(WaitFor([&] { return Matched() == 1; }));
  // The status is published at the end of the turn that applied the batch,
  // a moment after the index shows it.
  EXPECT_TRUE(WaitFor([&] { return Status().state == WorkerState::kLive; })) << static_cast<int>(Status().state);
}

TEST_F(SubscriberTest, AReplayWaitsForASlotAndItsTimeoutStartsWhenItGoesOut) {
  auto engine = StartEngine();
  for (uint32_t k = 0; k < 5; ++k) engine->PublishLost(ChainBlockPayload(k, kBlockSize));  // before kvindex came
  int other = 0;  // another worker's replay holds the only slot
  SubscriberConfig config;
  config.worker = WorkerKey{kPod, 0};
  config.context = WorkerContext{kModel, ""};
  config.events_endpoint = TcpEndpoint(engine->host(), engine->events_port());
  config.replay_endpoint = TcpEndpoint(engine->host(), engine->replay_port());
  config.replay_timeout = absl::Milliseconds(100);
  config.replay_slots = &slots_;
  absl::Notification done;
  io_.Post([&](IoThread& io) {
    EXPECT_TRUE(slots_.Acquire(&other, false, {}));
    auto subscriber = Subscriber::Create(io.context(), config, &index_, cell_);
    ASSERT_TRUE(subscriber.ok()) << subscriber.status();
    io.AddTask(1, *std::move(subscriber));
    EXPECT_EQ(slots_.waiting(), 1u);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(10)));
  // Five replay timeouts in line: the request never went out, and had its
  // clock run, the warm start would have failed by now.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  absl::Notification passed;
  io_.Post([&](IoThread&) { passed.Notify(); });
  ASSERT_TRUE(passed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(engine->replay_requests(), 0u);
  EXPECT_EQ(Status().state, WorkerState::kReplaying);
  EXPECT_EQ(Status().replays_failed, 0u);

  io_.Post([&](IoThread&) { slots_.Release(&other); });  // the other replay is over
  ASSERT_TRUE(WaitFor([&] { return Matched() == 5; })) << Matched();
  ASSERT_TRUE(WaitFor([&] { return Status().state == WorkerState::kLive; }));
  const WorkerStatus status = Status();
  EXPECT_EQ(status.replays_ok, 1u);
  EXPECT_EQ(status.replays_failed, 0u);
  EXPECT_TRUE(status.history_complete);
  EXPECT_EQ(engine->replay_requests(), 1u);
  // The replay is over: its slot is free again, and nobody waits.
  absl::Notification checked;
  io_.Post([&](IoThread&) {
    EXPECT_EQ(slots_.held(), 0u);
    EXPECT_EQ(slots_.waiting(), 0u);
    checked.Notify();
  });
  ASSERT_TRUE(checked.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_F(SubscriberTest, ARemovedWorkerGivesItsSlotOrItsPlaceInLineBack) {
  auto engine = StartEngine();
  engine->SetReplayMuted(true);  // replays stay out until they time out
  auto make_config = [&](uint32_t rank) {
    SubscriberConfig config;
    config.worker = WorkerKey{kPod, rank};
    config.context = WorkerContext{kModel, ""};
    config.events_endpoint = TcpEndpoint(engine->host(), engine->events_port());
    config.replay_endpoint = TcpEndpoint(engine->host(), engine->replay_port());
    config.replay_timeout = absl::Seconds(60);
    config.replay_slots = &slots_;
    return config;
  };
  absl::Notification done;
  io_.Post([&](IoThread& io) {
    for (uint32_t rank = 0; rank < 3; ++rank) {
      auto subscriber = Subscriber::Create(io.context(), make_config(rank), &index_,
                                           std::make_shared<WorkerStatusCell>(rank));
      ASSERT_TRUE(subscriber.ok()) << subscriber.status();
      io.AddTask(10 + rank, *std::move(subscriber));
    }
    EXPECT_EQ(slots_.held(), 1u);  // rank 0's replay
    EXPECT_EQ(slots_.waiting(), 2u);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(WaitFor([&] { return engine->replay_requests() == 1; })) << engine->replay_requests();
  absl::Notification removed;
  io_.Post([&](IoThread& io) {
    io.RemoveTask(11);  // in line
    EXPECT_EQ(slots_.waiting(), 1u);
    io.RemoveTask(10);  // holding: its slot goes to rank 2
    EXPECT_EQ(slots_.held(), 1u);
    EXPECT_EQ(slots_.waiting(), 0u);
    removed.Notify();
  });
  removed.WaitForNotification();
  ASSERT_TRUE(WaitFor([&] { return engine->replay_requests() == 2; })) << engine->replay_requests();
  io_.Post([&](IoThread& io) { io.RemoveTask(12); });
  absl::Notification checked;
  io_.Post([&](IoThread&) {
    EXPECT_EQ(slots_.held(), 0u);
    checked.Notify();
  });
  ASSERT_TRUE(checked.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST(TuneSocketTest, ReconnectBackoffHeartbeatsAndLimits) {
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::sub);
  TuneSocket(socket, ZmqTuning{});
  EXPECT_EQ(socket.get(zmq::sockopt::reconnect_ivl), 100);
  EXPECT_EQ(socket.get(zmq::sockopt::reconnect_ivl_max), 30000);
  EXPECT_EQ(socket.get(zmq::sockopt::heartbeat_ivl), 5000);
  EXPECT_EQ(socket.get(zmq::sockopt::heartbeat_timeout), 15000);
  EXPECT_EQ(socket.get(zmq::sockopt::linger), 0);
  EXPECT_EQ(socket.get(zmq::sockopt::ipv6), 1);
  EXPECT_EQ(socket.get(zmq::sockopt::maxmsgsize), (64 << 20) + 4096);
}

TEST(TcpEndpointTest, BracketsIpv6) {
  EXPECT_EQ(TcpEndpoint("10.0.0.1", 5557), "tcp://10.0.0.1:5557");
  EXPECT_EQ(TcpEndpoint("fd00::1", 5558), "tcp://[fd00::1]:5558");
}

TEST(ParseSeqFrameTest, EightBytesBigEndianOnly) {
  zmq::message_t frame(std::string("\x00\x00\x00\x00\x00\x00\x01\x02", 8));
  EXPECT_EQ(ParseSeqFrame(frame), 0x0102u);
  zmq::message_t seven(std::string(7, '\0'));
  EXPECT_EQ(ParseSeqFrame(seven), std::nullopt);
  zmq::message_t end(std::string(8, '\xff'));
  EXPECT_EQ(ParseSeqFrame(end), kReplayEndSeq);
}

TEST(ParseBindTopicTest, Shapes) {
  std::optional<BindTopic> t = ParseBindTopic("kv@10.0.0.1@llama");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->ip, "10.0.0.1");
  EXPECT_EQ(t->port, std::nullopt);
  EXPECT_EQ(t->model, "llama");

  t = ParseBindTopic("kv@10.0.0.1:5558@org/model@v2");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->port, 5558u);
  EXPECT_EQ(t->model, "org/model@v2");

  t = ParseBindTopic("kv@[fd00:0::1]:5557@m");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->ip, "fd00::1");  // normalised
  EXPECT_EQ(t->port, 5557u);

  t = ParseBindTopic("kv@fd00::1@m");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->ip, "fd00::1");
  EXPECT_EQ(t->port, std::nullopt);

  for (const char* bad : {"", "kv@", "kv@10.0.0.1", "kv@10.0.0.1@", "kv@host@m", "xx@10.0.0.1@m",
                          "kv@10.0.0.1:@m", "kv@10.0.0.1:99999@m", "kv@[fd00::1@m",
                          "kv@[fd00::1]x@m"}) {
    EXPECT_EQ(ParseBindTopic(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace kvindex
