#include "core/ingest/internal/io_thread.h"

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/wait.h"

namespace kvindex {
namespace {

using ::kvindex::testutil::WaitFor;

// Counters a task shares with the test thread.
struct Seen {
  std::atomic<int> turns{0};
  std::atomic<int> messages{0};
  std::atomic<bool> destroyed{false};
};

// A PAIR socket bound at `endpoint`; reads at most `per_turn` messages a turn.
// `wake_at`: a deadline to report (InfiniteFuture: none).
class PairTask : public IoTask {
 public:
  PairTask(zmq::context_t& context, const std::string& endpoint, Seen* seen, int per_turn = 1000)
      : socket_(context, zmq::socket_type::pair), seen_(seen), per_turn_(per_turn) {
    socket_.bind(endpoint);
  }
  ~PairTask() override { seen_->destroyed = true; }

  void CollectSockets(std::vector<zmq::socket_ref>& sockets) override { sockets.push_back(socket_); }
  void OnReady(absl::Time now) override {
    ++seen_->turns;
    zmq::message_t message;
    for (int i = 0; i < per_turn_ && socket_.recv(message, zmq::recv_flags::dontwait); ++i) ++seen_->messages;
    if (now >= wake_at_) wake_at_ = absl::InfiniteFuture();
  }
  absl::Time Deadline() const override { return wake_at_; }

  // Swaps its socket for a new one bound at `endpoint` (outside a turn).
  void Rebind(zmq::context_t& context, const std::string& endpoint) {
    socket_ = zmq::socket_t(context, zmq::socket_type::pair);
    socket_.bind(endpoint);
  }
  void WakeAt(absl::Time at) { wake_at_ = at; }
  void AskForTurn() { RequestTurn(); }

 private:
  zmq::socket_t socket_;
  Seen* const seen_;
  const int per_turn_;
  absl::Time wake_at_ = absl::InfiniteFuture();
};

class IoThreadTest : public ::testing::Test {
 protected:
  void TearDown() override { io_.Stop(); }

  // Runs `fn` on the I/O thread and waits for it.
  void OnThread(absl::AnyInvocable<void(IoThread&)> fn) {
    absl::Notification done;
    ASSERT_TRUE(io_.Post([&](IoThread& io) {
      fn(io);
      done.Notify();
    }));
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
  PairTask* Add(uint64_t id, const std::string& endpoint, Seen* seen, int per_turn = 1000) {
    PairTask* task = nullptr;
    OnThread([&](IoThread& io) {
      auto owned = std::make_unique<PairTask>(io.context(), endpoint, seen, per_turn);
      task = owned.get();
      io.AddTask(id, std::move(owned));
    });
    Drain();  // the turn AddTask gives runs after the command: counts read now include it
    return task;
  }
  zmq::socket_t Peer(const std::string& endpoint) {
    zmq::socket_t peer(context_, zmq::socket_type::pair);
    peer.connect(endpoint);
    return peer;
  }
  // Waits until the I/O thread has gone round its loop once more (a command ran).
  void Drain() {
    OnThread([](IoThread&) {});
  }

  // Counters that outlive the tasks (destroyed at TearDown, after the test body).
  Seen& NewSeen() { return seen_.emplace_back(); }

  std::deque<Seen> seen_;
  zmq::context_t context_{1};
  IoThread io_{context_, "io-test"};
};

// A turn touches only the tasks with input: a thousand idle tasks beside a
// busy one get no turn beyond the one AddTask gives them.
TEST_F(IoThreadTest, IdleTasksGetNoTurns) {
  constexpr int kIdle = 1000;
  std::vector<Seen*> idle;
  for (int i = 0; i < kIdle; ++i) idle.push_back(&NewSeen());
  for (int i = 0; i < kIdle; ++i) Add(10 + i, absl::StrCat("inproc://idle-", i), idle[i]);
  Seen& busy = NewSeen();
  Add(1, "inproc://busy", &busy);
  zmq::socket_t peer = Peer("inproc://busy");
  for (int i = 0; i < 200; ++i) {
    peer.send(zmq::str_buffer("x"), zmq::send_flags::none);
    if (i % 20 == 0) Drain();  // many separate wakeups, not one
  }
  ASSERT_TRUE(WaitFor([&] { return busy.messages == 200; })) << busy.messages;
  Drain();
  int idle_turns = 0;
  for (const Seen* seen : idle) idle_turns += seen->turns;
  EXPECT_EQ(idle_turns, kIdle);  // the first turn each, from AddTask
  EXPECT_GT(busy.turns, 1);
}

// ZMQ_FD signals changes only: input a task left (it reads one message a turn)
// is still delivered, without any new message to wake the thread.
TEST_F(IoThreadTest, InputLeftOverGetsMoreTurns) {
  Seen& seen = NewSeen();
  Add(1, "inproc://slow", &seen, /*per_turn=*/1);
  zmq::socket_t peer = Peer("inproc://slow");
  for (int i = 0; i < 50; ++i) peer.send(zmq::str_buffer("x"), zmq::send_flags::none);
  ASSERT_TRUE(WaitFor([&] { return seen.messages == 50; })) << seen.messages;
  EXPECT_GE(seen.turns, 50);
}

TEST_F(IoThreadTest, DeadlineGivesATurnWithoutInput) {
  Seen& seen = NewSeen();
  PairTask* task = Add(1, "inproc://timer", &seen);
  const int before = seen.turns;
  // Set through FindTask, as the manager's commands reach tasks: the found task gets a turn, which reads the deadline.
  OnThread([&](IoThread& io) {
    ASSERT_EQ(io.FindTask(1), task);
    task->WakeAt(absl::Now() + absl::Milliseconds(50));
  });
  ASSERT_TRUE(WaitFor([&] { return seen.turns >= before + 2; })) << seen.turns;  // FindTask's, then the timer's
  Drain();
  const int after = seen.turns;
  Drain();
  EXPECT_EQ(seen.turns, after);  // the deadline was cleared: no more turns
}

TEST_F(IoThreadTest, RequestTurnFromAnotherTaskGivesOne) {
  Seen& a = NewSeen();
  Seen& b = NewSeen();
  Add(1, "inproc://a", &a);
  PairTask* task_b = Add(2, "inproc://b", &b);
  const int before = b.turns;
  OnThread([&](IoThread&) { task_b->AskForTurn(); });
  ASSERT_TRUE(WaitFor([&] { return b.turns == before + 1; })) << b.turns;
}

// A task's socket set is read again after each turn: input on a socket that
// replaced the one registered is delivered.
TEST_F(IoThreadTest, ReplacedSocketIsWatched) {
  Seen& seen = NewSeen();
  PairTask* task = Add(1, "inproc://first", &seen);
  OnThread([&](IoThread& io) {
    task->Rebind(io.context(), "inproc://second");
    io.FindTask(1);  // a turn, after which the new socket is registered
  });
  zmq::socket_t peer = Peer("inproc://second");
  peer.send(zmq::str_buffer("x"), zmq::send_flags::none);
  ASSERT_TRUE(WaitFor([&] { return seen.messages == 1; }));
}

TEST_F(IoThreadTest, RemovedTaskIsDestroyedAndGetsNoTurns) {
  Seen& seen = NewSeen();
  Add(1, "inproc://gone", &seen);
  zmq::socket_t peer = Peer("inproc://gone");
  OnThread([](IoThread& io) { io.RemoveTask(1); });
  EXPECT_TRUE(seen.destroyed);
  const int turns = seen.turns;
  peer.send(zmq::str_buffer("x"), zmq::send_flags::dontwait);
  Drain();
  EXPECT_EQ(seen.turns, turns);
  OnThread([](IoThread& io) { EXPECT_EQ(io.FindTask(1), nullptr); });
}

TEST_F(IoThreadTest, StopDestroysEveryTaskAndRefusesCommands) {
  Seen& a = NewSeen();
  Seen& b = NewSeen();
  Add(1, "inproc://s1", &a);
  Add(2, "inproc://s2", &b);
  io_.Stop();
  EXPECT_TRUE(a.destroyed);
  EXPECT_TRUE(b.destroyed);
  EXPECT_FALSE(io_.Post([](IoThread&) {}));
}

}  // namespace
}  // namespace kvindex
