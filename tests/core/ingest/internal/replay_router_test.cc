#include "core/ingest/internal/replay_router.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/core/ingest/fake_engine.h"
#include "tests/testing/wait.h"

namespace kvindex {
namespace {

using ::kvindex::testing::FakeEngine;
using ::kvindex::testing::FakeEngineOptions;
using ::kvindex::testutil::WaitFor;

// Records the seq of every reply it gets; readable from the test thread.
class RecordingClient : public ReplayClient {
 public:
  void OnReplayReply(absl::Span<const zmq::message_t> frames, size_t total, absl::Time) override {
    absl::MutexLock lock(&mu_);
    std::optional<uint64_t> seq = total == 3 ? ParseSeqFrame(frames[1]) : std::nullopt;
    seqs_.push_back(seq.value_or(0xbad));
  }
  std::vector<uint64_t> seqs() const {
    absl::MutexLock lock(&mu_);
    return seqs_;
  }
  bool ended() const {
    absl::MutexLock lock(&mu_);
    return !seqs_.empty() && seqs_.back() == kReplayEndSeq;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<uint64_t> seqs_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<FakeEngine> EngineWithBatches(int batches) {
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create(FakeEngineOptions{});
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return nullptr;
  for (int i = 0; i < batches; ++i) (*engine)->PublishLost("payload");
  return *std::move(engine);
}

std::string ReplayEndpoint(const FakeEngine& engine) { return TcpEndpoint(engine.host(), engine.replay_port()); }

class ReplayRouterTest : public ::testing::Test {
 protected:
  ReplayRouterTest() {
    auto router = std::make_unique<ReplayRouter>(context_);
    router_ = router.get();
    io_.Post([router = std::move(router)](IoThread& io) mutable { io.AddTask(0, std::move(router)); });
  }
  void TearDown() override { io_.Stop(); }

  // Runs `fn` on the I/O thread (where the router lives) and waits for it.
  void OnThread(absl::AnyInvocable<void()> fn) {
    absl::Notification done;
    ASSERT_TRUE(io_.Post([&](IoThread&) {
      fn();
      done.Notify();
    }));
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
  bool Request(ReplayClient* client, const std::string& endpoint, uint64_t from) {
    bool sent = false;
    OnThread([&] { sent = router_->Request(client, endpoint, from); });
    return sent;
  }

  zmq::context_t context_{1};
  IoThread io_{context_, "replay-test"};
  ReplayRouter* router_ = nullptr;  // owned by io_
};

TEST_F(ReplayRouterTest, RepliesReachTheClientThatAsked) {
  auto a = EngineWithBatches(3);
  auto b = EngineWithBatches(5);
  RecordingClient from_a, from_b;
  ASSERT_TRUE(Request(&from_a, ReplayEndpoint(*a), 0));
  ASSERT_TRUE(Request(&from_b, ReplayEndpoint(*b), 2));
  ASSERT_TRUE(WaitFor([&] { return from_a.ended() && from_b.ended(); }));
  EXPECT_EQ(from_a.seqs(), (std::vector<uint64_t>{0, 1, 2, kReplayEndSeq}));
  EXPECT_EQ(from_b.seqs(), (std::vector<uint64_t>{2, 3, 4, kReplayEndSeq}));
}

// ZeroMQ disconnects by endpoint, so two requests to one endpoint at once go
// over two sockets; each client still gets exactly its own answer.
TEST_F(ReplayRouterTest, TwoClientsOfOneEndpointAtOnce) {
  auto engine = EngineWithBatches(2);
  RecordingClient first, second;
  ASSERT_TRUE(Request(&first, ReplayEndpoint(*engine), 0));
  ASSERT_TRUE(Request(&second, ReplayEndpoint(*engine), 1));
  ASSERT_TRUE(WaitFor([&] { return first.ended() && second.ended(); }));
  EXPECT_EQ(first.seqs(), (std::vector<uint64_t>{0, 1, kReplayEndSeq}));
  EXPECT_EQ(second.seqs(), (std::vector<uint64_t>{1, kReplayEndSeq}));
  // Cancelling one leaves the other's connection alone.
  OnThread([&] { router_->Cancel(&first); });
  RecordingClient third;
  ASSERT_TRUE(Request(&third, ReplayEndpoint(*engine), 0));
  ASSERT_TRUE(WaitFor([&] { return third.ended(); }));
  EXPECT_EQ(third.seqs(), (std::vector<uint64_t>{0, 1, kReplayEndSeq}));
}

// A request is held until the engine's socket is there (as a DEALER would).
TEST_F(ReplayRouterTest, RequestWaitsForTheEngine) {
  FakeEngineOptions options;
  {
    auto probe = EngineWithBatches(0);  // finds a free port, then frees it
    options.replay_port = probe->replay_port();
  }
  RecordingClient client;
  ASSERT_TRUE(Request(&client, TcpEndpoint("127.0.0.1", options.replay_port), 0));
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  (*engine)->PublishLost("late");
  ASSERT_TRUE(WaitFor([&] { return client.ended(); }));
  EXPECT_EQ(client.seqs(), (std::vector<uint64_t>{0, kReplayEndSeq}));
}

// After Cancel a client hears nothing more, and a new request gets a new connection.
TEST_F(ReplayRouterTest, CancelledRequestIsNotAnswered) {
  auto engine = EngineWithBatches(1);
  engine->SetReplayMuted(true);
  RecordingClient client;
  ASSERT_TRUE(Request(&client, ReplayEndpoint(*engine), 0));
  ASSERT_TRUE(WaitFor([&] { return engine->replay_requests() == 1; }));
  OnThread([&] { router_->Cancel(&client); });
  engine->SetReplayMuted(false);
  ASSERT_TRUE(Request(&client, ReplayEndpoint(*engine), 0));
  ASSERT_TRUE(WaitFor([&] { return client.ended(); }));
  EXPECT_EQ(client.seqs(), (std::vector<uint64_t>{0, kReplayEndSeq}));  // the muted request's answer never came
}

TEST_F(ReplayRouterTest, BadEndpointIsRefused) {
  RecordingClient client;
  EXPECT_FALSE(Request(&client, "tcp://not an endpoint", 0));
  OnThread([&] { router_->Cancel(&client); });  // nothing to cancel: no-op
}

}  // namespace
}  // namespace kvindex
