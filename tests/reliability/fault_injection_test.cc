// Fault injection with real processes and sockets: a kvindex-server process,
// kvindex-sim processes (simulated vLLM engines with ground truth), and
// in-test ZeroMQ/TCP middlemen that drop, corrupt, silence or cut traffic.
// After each fault, once the engines have stopped and the server has caught up
// with their last batch, every answer must equal the simulator's ground truth
// (CompareWithTruth: blocks per worker and per tier, every held chain, every
// sample prompt). The engines mix payload layouts, hash encodings and replay
// forms, and offload to a CPU tier.

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvindex/v1/kvindex.grpc.pb.h"
#include "tests/reliability/fault_proxy.h"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"
#include "tests/testing/clients.h"
#include "tests/testing/dead_port.h"
#include "tests/testing/pods.h"
#include "tests/testing/wait.h"

namespace kvindex::testing {
namespace {

constexpr absl::Duration kCatchUp = absl::Seconds(90);
constexpr absl::Duration kTraffic = absl::Seconds(120);
// How often a wait re-checks its condition: each check calls the server.
constexpr absl::Duration kPoll = absl::Milliseconds(20);

using ::kvindex::testutil::Connect;
using ::kvindex::testutil::DeadPort;
using ::kvindex::testutil::EnginePod;
using ::kvindex::testutil::PendingPod;
using ::kvindex::testutil::PodKey;
using ::kvindex::testutil::SnapshotUpdate;
using ::kvindex::testutil::Upsert;
using ::kvindex::testutil::WaitFor;

// Sim flags shared by the tests: small, quick, deterministic engines whose
// GPU cache offloads to a CPU tier and loads back from it; pods cycle through
// the payload layouts (map, array, sglang), hash encodings (int, bytes) and
// replay forms (later flags in `extra` win: a one-pod test names its own).
std::vector<std::string> SimArgs(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--ip=127.0.0.1", "--block_size=16", "--capacity_blocks=64",
                                   "--cpu_capacity_blocks=64", "--layout=mixed", "--hash=mixed",
                                   "--replay_form=mixed", "--system_prompts=2", "--system_prompt_tokens=64",
                                   "--conversations=4", "--turn_tokens=64", "--keep_running"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// The issue-15 engines on two pods (map, array): `hybrid` and `offload` are
// per-pod lists (e.g. "window:32,none", "2,0"); the vLLM pods get multimodal
// and salted prompts. The chunks fit the system prompts (64 tokens, 4 blocks).
std::vector<std::string> MixArgs(const std::string& hybrid, const std::string& offload) {
  return {absl::StrCat("--hybrid=", hybrid), absl::StrCat("--offload_chunk_blocks=", offload), "--mm_fraction=0.25",
          "--salted_tenants=1"};
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A workload whose engine caches turn over completely (every prompt new, a
// small cache): whatever an engine held before a fault is evicted later.
std::vector<std::string> TurnoverArgs(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--system_prompts=0", "--max_turns=1", "--capacity_blocks=32",
                                   "--cpu_capacity_blocks=32"};
  args.insert(args.end(), extra.begin(), extra.end());
  return SimArgs(args);
}

std::set<std::string> PodKeys(client::KvIndexClient& client) {
  std::set<std::string> keys;
  absl::StatusOr<v1::ListPodsResponse> pods = client.ListPods();
  EXPECT_TRUE(pods.ok()) << pods.status();
  if (pods.ok()) {
    for (const v1::PodInfo& pod : pods->pods()) keys.insert(pod.key());
  }
  return keys;
}

v1::WorkerInfo WorkerOf(client::KvIndexClient& client, const std::string& name) {
  absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> workers = Workers(client);
  EXPECT_TRUE(workers.ok()) << workers.status();
  if (workers.ok()) {
    for (const auto& [n, w] : *workers) {
      if (n == name) return w;
    }
  }
  ADD_FAILURE() << "no worker " << name;
  return {};
}

// Waits for the sim's traffic to end and the server to catch up, then compares.
// Every fault sim has a CPU tier: the comparison must have covered CPU blocks.
void ExpectTruth(SimProcess& sim, client::KvIndexClient& client, const std::vector<std::string>& only_pods = {}) {
  absl::Status done = sim.WaitTrafficDone(kTraffic);
  ASSERT_TRUE(done.ok()) << done << "\n" << sim.process().Stderr();
  absl::StatusOr<nlohmann::json> truth = sim.Truth();
  absl::StatusOr<nlohmann::json> prompts = sim.Prompts();
  ASSERT_TRUE(truth.ok() && prompts.ok());
  nlohmann::json followed = *truth;
  if (!only_pods.empty()) {
    followed["pods"] = nlohmann::json::array();
    for (const auto& pod : (*truth)["pods"]) {
      if (std::find(only_pods.begin(), only_pods.end(), pod["key"].get<std::string>()) != only_pods.end()) {
        followed["pods"].push_back(pod);
      }
    }
  }
  absl::Status caught_up = WaitForCatchUp(client, followed, kCatchUp);
  ASSERT_TRUE(caught_up.ok()) << caught_up;
  absl::StatusOr<TruthComparison> same = CompareWithTruth(client, *truth, *prompts, only_pods);
  ASSERT_TRUE(same.ok()) << same.status();
  std::printf(
      "compared with the truth: %zu workers, %zu blocks held (%zu on CPU), %zu chains (%zu partial matches), "
      "%zu hybrid cuts, %zu prompts, %zu expected matches\n",
      same->workers, same->blocks, same->cpu_blocks, same->chains, same->partial_matches, same->hybrid_cuts,
      same->prompts, same->prompt_matches);
  EXPECT_GT(same->blocks, 0u) << "nothing to compare";
  EXPECT_GT(same->cpu_blocks, 0u) << "the CPU tier was never compared";
}

class FaultInjectionTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> args = {}) {
    absl::StatusOr<ServerProcess> server = StartServerProcess(std::move(args));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Connect(server_.address, absl::Seconds(60));
    ASSERT_NE(client_, nullptr);
  }

  void Push(const v1::PodSnapshot& pods) {
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client_->SyncPods({SnapshotUpdate(pods)});
    ASSERT_TRUE(acks.ok()) << acks.status();
    for (const v1::PodAck& ack : (*acks)[0].pods()) {
      EXPECT_EQ(ack.outcome(), v1::POD_OUTCOME_SUBSCRIBED) << ack.pod() << ": " << ack.reason();
    }
  }

  ServerProcess server_;
  std::unique_ptr<client::KvIndexClient> client_;
};

TEST_F(FaultInjectionTest, EngineKilledAndRestartedMidStream) {
  absl::StatusOr<std::unique_ptr<SimProcess>> first =
      SimProcess::Start(SimArgs(Concat({"--pods=2", "--base_port=0", "--seed=1", "--rate=200", "--requests=4000"},
                                       MixArgs("window:32,none", "2,0"))));
  ASSERT_TRUE(first.ok()) << first.status();
  // The restarted engines bind the ports the kernel gave the first ones.
  const std::string same_ports = (*first)->SamePortsFlag();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push((*first)->pods()));
  // Mid-stream: both engines well into their traffic.
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<std::vector<std::pair<std::string, v1::WorkerInfo>>> w = Workers(*client_);
        if (!w.ok() || w->size() != 2) return false;
        for (const auto& [name, info] : *w) {
          if (info.last_seq() < 150) return false;
        }
        return true;
      },
      absl::Seconds(60), kPoll));
  (*first)->process().Signal(SIGKILL);
  ASSERT_TRUE((*first)->process().Wait(absl::Seconds(10)).has_value());
  first->reset();

  // A new process on the same ports, with other engine hashes, slower: its seq
  // restarts at 0 and stays below the old one's until kvindex reconnects.
  absl::StatusOr<std::unique_ptr<SimProcess>> second =
      SimProcess::Start(SimArgs(Concat({"--pods=2", same_ports, "--seed=2", "--rate=20", "--requests=80"},
                                       MixArgs("window:32,none", "2,0"))));
  ASSERT_TRUE(second.ok()) << second.status();
  ExpectTruth(**second, *client_);
  for (const v1::Pod& pod : (*second)->pods().pods()) {
    const v1::WorkerInfo w = WorkerOf(*client_, absl::StrCat(PodKey(pod), "#0"));
    EXPECT_GE(w.restarts(), 1u) << "the restart was not noticed";
  }
}

TEST_F(FaultInjectionTest, DroppedMessagesAreReplayed) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim =
      SimProcess::Start(SimArgs({"--pods=1", "--base_port=0", "--seed=3", "--rate=60", "--requests=300", "--layout=sglang",
                                         "--hash=bytes", "--replay_form=topic"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  v1::PodSnapshot pods = (*sim)->pods();
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy = FaultProxy::Start(
      absl::StrCat("tcp://127.0.0.1:", pods.pods(0).events_port()), FaultPolicy{.drop = {20, 21, 22, 60, 110, 111}});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  pods.mutable_pods(0)->set_events_port((*proxy)->port());
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push(pods));
  ExpectTruth(**sim, *client_);
  EXPECT_EQ((*proxy)->dropped(), 6u);
  const v1::WorkerInfo w = WorkerOf(*client_, absl::StrCat(PodKey(pods.pods(0)), "#0"));
  // Three lossy stretches; one that falls inside another's replay is covered by it.
  EXPECT_GE(w.gaps(), 1u);
  EXPECT_GE(w.replays_ok(), 1u);
  EXPECT_EQ(w.uncovered_gaps(), 0u);
  EXPECT_EQ(w.batches(), static_cast<uint64_t>(w.last_seq() + 1)) << "every batch applied exactly once";
}

TEST_F(FaultInjectionTest, DroppedMessagesWithoutReplayClearThenRecover) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      TurnoverArgs({"--pods=1", "--base_port=0", "--seed=4", "--rate=80", "--requests=400", "--replay=false",
                    "--layout=array", "--hash=bytes"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  v1::PodSnapshot pods = (*sim)->pods();
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy = FaultProxy::Start(
      absl::StrCat("tcp://127.0.0.1:", pods.pods(0).events_port()), FaultPolicy{.drop = {40, 90, 91}});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  pods.mutable_pods(0)->set_events_port((*proxy)->port());
  pods.mutable_pods(0)->set_replay_port(0);  // explicitly none
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push(pods));
  ExpectTruth(**sim, *client_);
  const v1::WorkerInfo w = WorkerOf(*client_, absl::StrCat(PodKey(pods.pods(0)), "#0"));
  EXPECT_EQ(w.gaps(), 2u);
  EXPECT_EQ(w.uncovered_gaps(), w.gaps()) << "each loss clears the worker and is counted";
}

TEST_F(FaultInjectionTest, ReplaySocketThatNeverAnswers) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      TurnoverArgs({"--pods=1", "--base_port=0", "--seed=5", "--rate=60", "--requests=500", "--layout=sglang"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  v1::PodSnapshot pods = (*sim)->pods();
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy = FaultProxy::Start(
      absl::StrCat("tcp://127.0.0.1:", pods.pods(0).events_port()), FaultPolicy{.drop = {150, 300}});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  absl::StatusOr<std::unique_ptr<SilentReplay>> silent = SilentReplay::Start();
  ASSERT_TRUE(silent.ok()) << silent.status();
  pods.mutable_pods(0)->set_events_port((*proxy)->port());
  pods.mutable_pods(0)->set_replay_port((*silent)->port());
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push(pods));
  ExpectTruth(**sim, *client_);
  const v1::WorkerInfo w = WorkerOf(*client_, absl::StrCat(PodKey(pods.pods(0)), "#0"));
  EXPECT_GE((*silent)->requests(), 2u) << "first subscribe and every gap ask the replay socket";
  EXPECT_GE(w.replays_failed(), 2u);
  EXPECT_GE(w.uncovered_gaps(), 1u);
  EXPECT_EQ(w.uncovered_gaps(), w.gaps()) << "no gap could be covered";
  EXPECT_EQ(w.state(), "live");
}

TEST_F(FaultInjectionTest, TenThousandMalformedMessagesAmongGoodTraffic) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim =
      SimProcess::Start(SimArgs({"--pods=1", "--base_port=0", "--seed=6", "--rate=100", "--requests=400", "--layout=map", "--hash=bytes"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  v1::PodSnapshot pods = (*sim)->pods();
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
      FaultProxy::Start(absl::StrCat("tcp://127.0.0.1:", pods.pods(0).events_port()),
                        FaultPolicy{.malformed_per_message = 40, .max_malformed = 10000});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  pods.mutable_pods(0)->set_events_port((*proxy)->port());
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push(pods));
  ExpectTruth(**sim, *client_);
  ASSERT_EQ((*proxy)->malformed(), 10000u) << "the engine's traffic ended before every bad message was sent";
  const std::string name = absl::StrCat(PodKey(pods.pods(0)), "#0");
  ASSERT_TRUE(WaitFor([&] { return WorkerOf(*client_, name).bad_frames() == 10000; }, absl::Seconds(30), kPoll))
      << WorkerOf(*client_, name).bad_frames();
  const v1::WorkerInfo w = WorkerOf(*client_, name);
  EXPECT_EQ(w.decode_errors(), 0u);
  EXPECT_EQ(w.uncovered_gaps(), 0u);
  EXPECT_EQ(w.restarts(), 0u);
  EXPECT_EQ(w.batches(), static_cast<uint64_t>(w.last_seq() + 1)) << "every good batch applied exactly once";
}

// Forwards one TCP connection to `target` and cuts both directions once
// `cut_after` bytes went from the client to the server.
class CuttingTcpProxy {
 public:
  CuttingTcpProxy(int target_port, size_t cut_after) : target_port_(target_port), cut_after_(cut_after) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 4), 0);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~CuttingTcpProxy() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
  }
  int port() const { return port_; }
  bool cut() const { return cut_.load(); }

 private:
  void Run() {
    int client = -1;
    while (!stop_ && client < 0) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) > 0) client = accept(listen_fd_, nullptr, nullptr);
    }
    if (client < 0) return;
    const int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(client);
      close(server);
      return;
    }
    size_t upstream = 0;
    char buf[16384];
    while (!stop_ && !cut_) {
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (poll(fds, 2, 50) <= 0) continue;
      if (fds[0].revents & (POLLIN | POLLHUP)) {
        const size_t room = cut_after_ - upstream;
        const ssize_t n = read(client, buf, std::min(sizeof(buf), room));
        if (n <= 0) break;
        if (write(server, buf, n) != n) break;
        upstream += n;
        if (upstream >= cut_after_) cut_ = true;
      }
      if (fds[1].revents & (POLLIN | POLLHUP)) {
        const ssize_t n = read(server, buf, sizeof(buf));
        if (n <= 0 || write(client, buf, n) != n) break;
      }
    }
    // A reset, as when a control plane's node dies: no orderly close.
    linger hard{1, 0};
    setsockopt(client, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    setsockopt(server, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    close(client);
    close(server);
  }

  const int target_port_;
  const size_t cut_after_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::thread thread_;
};

// Known, never subscribed.
v1::Pod DummyPod(const std::string& name, size_t label_bytes) {
  v1::Pod pod = PendingPod("dummy", name);
  (*pod.mutable_labels())["padding"] = std::string(label_bytes, 'p');
  return pod;
}

TEST_F(FaultInjectionTest, ControlPlaneStreamCutInTheMiddleOfASnapshot) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim =
      SimProcess::Start(SimArgs({"--pods=2", "--base_port=0", "--seed=7", "--rate=50", "--requests=250"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  const v1::PodSnapshot& pods = (*sim)->pods();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push(pods));
  const std::set<std::string> before = PodKeys(*client_);
  ASSERT_EQ(before.size(), 2u);

  // A 3 MB snapshot (pod 0 and 3000 padded pods, pod 1 absent), cut after 512 KiB.
  v1::PodSnapshot big;
  *big.add_pods() = pods.pods(0);
  for (int i = 0; i < 3000; ++i) *big.add_pods() = DummyPod(absl::StrCat("pad-", i), 1000);
  {
    CuttingTcpProxy cut(server_.port, 512 << 10);
    std::unique_ptr<client::KvIndexClient> doomed = Connect(absl::StrCat("127.0.0.1:", cut.port()), absl::Seconds(20));
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = doomed->SyncPods({SnapshotUpdate(big)});
    EXPECT_FALSE(acks.ok());
    EXPECT_TRUE(cut.cut());
  }
  // Nothing of the half-received snapshot was applied.
  EXPECT_EQ(PodKeys(*client_), before);

  // The control plane reconnects and sends its current snapshot: pod 0 and two others.
  v1::PodSnapshot now;
  *now.add_pods() = pods.pods(0);
  *now.add_pods() = DummyPod("a", 10);
  *now.add_pods() = DummyPod("b", 10);
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client_->SyncPods({SnapshotUpdate(now)});
  ASSERT_TRUE(acks.ok()) << acks.status();
  const std::string pod0 = PodKey(pods.pods(0));
  EXPECT_EQ(PodKeys(*client_), (std::set<std::string>{pod0, "dummy/a", "dummy/b"}));
  // Pod 1's blocks went with it; pod 0's equal its engine's.
  ExpectTruth(**sim, *client_, {pod0});
  absl::StatusOr<v1::GetStatsResponse> stats = client_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->workers(), 1u);
}

v1::Pod ChurnPod(int i, uint32_t dead_port) {
  return EnginePod("churn", absl::StrCat("p-", i), "sim-model", dead_port);
}

// Match calls from `threads` threads until stopped; counts non-OK answers.
// Each thread cycles through `requests` (by default one prompt of 256 made-up tokens).
class MatchLoad {
 public:
  MatchLoad(client::KvIndexClient* client, int threads, std::set<absl::StatusCode> tolerated = {},
            std::vector<v1::MatchRequest> requests = {}) {
    for (int t = 0; t < threads; ++t) {
      std::vector<v1::MatchRequest> mine = requests;
      if (mine.empty()) {
        v1::MatchRequest& request = mine.emplace_back();
        request.set_model("sim-model");
        for (uint32_t i = 0; i < 256; ++i) request.add_token_ids((i * 7919u + t) % 32000u);
      }
      threads_.emplace_back([this, client, t, tolerated, mine = std::move(mine)] {
        for (size_t n = t; !stop_.load(); ++n) {
          absl::StatusOr<v1::MatchResponse> r = client->Match(mine[n % mine.size()]);
          if (r.ok()) {
            ++ok_;
          } else if (tolerated.count(r.status().code()) > 0) {
            ++tolerated_;
          } else {
            ++errors_;
            absl::MutexLock lock(&mu_);
            last_error_ = r.status();
          }
        }
      });
    }
  }
  ~MatchLoad() { Stop(); }
  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  uint64_t ok() const { return ok_.load(); }
  uint64_t errors() const { return errors_.load(); }
  std::string last_error() {
    absl::MutexLock lock(&mu_);
    return last_error_.ToString();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ok_{0}, tolerated_{0}, errors_{0};
  absl::Mutex mu_;
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// What the churn tests rely on: while a DeadPort lives, connecting to it is
// refused, and nobody can bind its port, not even with SO_REUSEADDR as ZeroMQ does.
TEST(DeadPortTest, RefusesConnectionsAndCannotBeTaken) {
  absl::StatusOr<std::unique_ptr<DeadPort>> dead = DeadPort::Bind();
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_NE((*dead)->port(), 0u);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>((*dead)->port()));

  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  EXPECT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), -1);
  EXPECT_EQ(errno, ECONNREFUSED);
  close(client);

  const int taker = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(taker, 0);
  const int one = 1;
  ASSERT_EQ(setsockopt(taker, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
  EXPECT_EQ(bind(taker, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), -1);
  EXPECT_EQ(errno, EADDRINUSE);
  close(taker);
}

// The ports a sim reports without its truth (the pods file, for the floods'
// huge truths) are the ones it bound, the ones its truth names.
TEST(SimProcessTest, PodsFileNamesTheBoundPorts) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      SimArgs({"--pods=2", "--base_port=0", "--lora_name=l", "--topic=kv@{pod}", "--rate=10", "--requests=1"}),
      /*read_pods=*/false);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_EQ((*sim)->pods().pods_size(), 2);
  absl::StatusOr<nlohmann::json> truth;
  ASSERT_TRUE(WaitFor([&] { return (truth = (*sim)->Truth()).ok(); }, absl::Seconds(30), kPoll));
  ASSERT_EQ((*truth)["pods"].size(), 2u);
  std::vector<std::string> ports;
  for (int i = 0; i < 2; ++i) {
    const v1::Pod& pod = (*sim)->pods().pods(i);
    const nlohmann::json& want = (*truth)["pods"][i];
    EXPECT_EQ(PodKey(pod), want["key"].get<std::string>());
    EXPECT_EQ(pod.ip(), "127.0.0.1");
    EXPECT_EQ(pod.model(), want["model"].get<std::string>());
    EXPECT_EQ(pod.lora_name(), "l");
    EXPECT_EQ(pod.topic(), want["topic"].get<std::string>());
    EXPECT_EQ(pod.dp_size(), 1u);
    EXPECT_EQ(pod.events_port(), want["events_port"].get<uint32_t>());
    EXPECT_EQ(pod.replay_port(), want["replay_port"].get<uint32_t>());
    EXPECT_NE(pod.events_port(), 0u);
    ports.push_back(absl::StrCat(pod.events_port(), ":", pod.replay_port()));
  }
  EXPECT_EQ((*sim)->SamePortsFlag(), absl::StrCat("--ports=", ports[0], ",", ports[1]));
}

// The token prompts of a sim's prompts file whose label starts with `label_prefix`, as Match requests.
std::vector<v1::MatchRequest> PromptRequests(const nlohmann::json& prompts, const std::string& label_prefix = "") {
  std::vector<v1::MatchRequest> out;
  for (const auto& p : prompts["prompts"]) {
    if (!absl::StartsWith(p["label"].get<std::string>(), label_prefix)) continue;
    v1::MatchRequest& request = out.emplace_back();
    request.set_model(prompts["model"].get<std::string>());
    for (const auto& t : p["tokens"]) request.add_token_ids(t.get<uint32_t>());
    if (p.contains("cache_salt")) request.set_cache_salt(p["cache_salt"].get<std::string>());
    for (const auto& in : p.value("mm_inputs", nlohmann::json::array())) {
      v1::MultimodalInput* mm = request.add_mm_inputs();
      mm->set_identifier(in["identifier"].get<std::string>());
      mm->set_offset(in["offset"].get<uint32_t>());
      mm->set_length(in["length"].get<uint32_t>());
    }
  }
  return out;
}

bool Names(const v1::MatchResponse& response, const std::string& pod) {
  for (const v1::PodMatch& m : response.pods()) {
    if (m.pod() == pod) return true;
  }
  return false;
}

TEST_F(FaultInjectionTest, ThousandPodAddDeleteCyclesUnderMatchLoad) {
  // The pods that stay: three (map/int, array/bytes, sglang/int) whose traffic
  // is over before the churn starts, so their truth holds still meanwhile.
  absl::StatusOr<std::unique_ptr<SimProcess>> sim =
      SimProcess::Start(SimArgs({"--pods=3", "--base_port=0", "--seed=8", "--rate=100", "--requests=200"}));
  ASSERT_TRUE(sim.ok()) << sim.status();
  // The churned pods: four engines with the same workload seed (the same system
  // prompts, so a deleted pod's leftover blocks would show in the survivors'
  // answers), publishing all along the churn; each time one is added, the
  // server replays its history from seq 0 while live batches arrive.
  absl::StatusOr<std::unique_ptr<SimProcess>> churn_sim = SimProcess::Start(
      SimArgs({"--pods=4", "--namespace=churn", "--base_port=0", "--seed=8", "--rate=10", "--requests=1000000"}));
  ASSERT_TRUE(churn_sim.ok()) << churn_sim.status();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push((*sim)->pods()));
  absl::Status done = (*sim)->WaitTrafficDone(kTraffic);
  ASSERT_TRUE(done.ok()) << done;
  const absl::StatusOr<nlohmann::json> truth = (*sim)->Truth();
  const absl::StatusOr<nlohmann::json> prompts = (*sim)->Prompts();
  ASSERT_TRUE(truth.ok() && prompts.ok());
  absl::Status caught_up = WaitForCatchUp(*client_, *truth, kCatchUp);
  ASSERT_TRUE(caught_up.ok()) << caught_up;

  // Probes: the system prompts (plus a question), whose first blocks every engine holds.
  const absl::StatusOr<nlohmann::json> churn_prompts = (*churn_sim)->Prompts();
  ASSERT_TRUE(churn_prompts.ok());
  const std::vector<v1::MatchRequest> probes = PromptRequests(*churn_prompts, "system-");
  ASSERT_FALSE(probes.empty());
  std::vector<v1::MatchRequest> load_requests = PromptRequests(*prompts);
  load_requests.insert(load_requests.end(), probes.begin(), probes.end());
  MatchLoad load(client_.get(), 2, {}, load_requests);

  std::unique_ptr<client::KvIndexClient> churner = Connect(server_.address, absl::Seconds(30));
  const v1::PodSnapshot& churn_pods = (*churn_sim)->pods();
  ASSERT_EQ(churn_pods.pods_size(), 4);
  auto named_by_a_probe = [&](const std::string& key) {
    for (const v1::MatchRequest& probe : probes) {
      absl::StatusOr<v1::MatchResponse> r = client_->Match(probe);
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok() && Names(*r, key)) return true;
    }
    return false;
  };
  size_t held_data = 0;
  for (int i = 0; i < 1000; ++i) {
    const v1::Pod& pod = churn_pods.pods(i % churn_pods.pods_size());
    const std::string key = PodKey(pod);
    absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = churner->SyncPods({Upsert(pod)});
    ASSERT_TRUE(acks.ok()) << "cycle " << i << ": " << acks.status();
    ASSERT_EQ(acks->size(), 1u);
    ASSERT_EQ((*acks)[0].outcome(), v1::POD_OUTCOME_SUBSCRIBED) << "cycle " << i << ": " << (*acks)[0].reason();
    if (i % 10 == 0) {
      // Every tenth pod is deleted only once it answers a probe: it holds data.
      ASSERT_TRUE(WaitFor([&] { return named_by_a_probe(key); }, absl::Seconds(30), kPoll))
          << "cycle " << i << ": " << key << " never matched a probe";
      ++held_data;
    }
    acks = churner->SyncPods({testutil::Delete(key)});
    ASSERT_TRUE(acks.ok()) << "cycle " << i << ": " << acks.status();
    ASSERT_EQ(acks->size(), 1u);
    ASSERT_EQ((*acks)[0].outcome(), v1::POD_OUTCOME_REMOVED) << "cycle " << i << ": " << (*acks)[0].reason();
    // Once the delete is acknowledged, no answer names the pod.
    ASSERT_FALSE(named_by_a_probe(key)) << "cycle " << i << ": " << key << " deleted, still matched";
    if (i % 100 == 99) {
      // The pods that stay are still exactly their engines (nothing of the churned pods left).
      absl::StatusOr<TruthComparison> same = CompareWithTruth(*client_, *truth, *prompts);
      ASSERT_TRUE(same.ok()) << "after cycle " << i << ": " << same.status();
    }
  }
  load.Stop();
  EXPECT_EQ(held_data, 100u);
  EXPECT_GT(load.ok(), 0u);
  EXPECT_EQ(load.errors(), 0u) << load.last_error();

  std::set<std::string> keys;
  for (const v1::Pod& pod : (*sim)->pods().pods()) keys.insert(PodKey(pod));
  EXPECT_EQ(PodKeys(*client_), keys);
  ExpectTruth(**sim, *client_);
  absl::StatusOr<v1::GetStatsResponse> stats = client_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->subscribed_pods(), 3u);
  EXPECT_EQ(stats->workers(), 3u);
}

TEST_F(FaultInjectionTest, SigtermUnderLoadThenRestartRebuildsFromReplay) {
  absl::StatusOr<std::unique_ptr<SimProcess>> sim =
      SimProcess::Start(SimArgs(Concat({"--pods=2", "--base_port=0", "--seed=9", "--rate=100", "--requests=600"},
                                       MixArgs("none,mamba", "0,2"))));
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push((*sim)->pods()));
  std::unique_ptr<client::KvIndexClient> caller = Connect(server_.address, absl::Seconds(10));
  // During and after the stop, calls are answered or refused, never left to run out their deadline:
  // UNAVAILABLE from the draining service or a closed port, or CANCELLED for a call that reaches the
  // connection while gRPC itself is closing it (its core resets such a stream without a status).
  MatchLoad load(caller.get(), 3, {absl::StatusCode::kUnavailable, absl::StatusCode::kCancelled});
  // The churn pods' endpoint stays dead until the churn thread is joined.
  absl::StatusOr<std::unique_ptr<DeadPort>> dead = DeadPort::Bind();
  ASSERT_TRUE(dead.ok()) << dead.status();
  std::atomic<bool> churn_stop{false};
  std::thread churn([&, dead_port = (*dead)->port()] {
    std::unique_ptr<client::KvIndexClient> churner = Connect(server_.address, absl::Seconds(10));
    if (churner == nullptr) return;
    for (int i = 0; !churn_stop.load(); ++i) {
      const v1::PodUpdate up = Upsert(ChurnPod(i % 10, dead_port));
      const v1::PodUpdate down = testutil::Delete(absl::StrCat("churn/p-", i % 10));
      if (!churner->SyncPods({up, down}).ok()) break;
    }
  });
  ASSERT_TRUE(WaitFor([&] { return load.ok() > 50; }, absl::Seconds(30), kPoll));
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server_.process->Signal(SIGTERM));
  const std::optional<int> exit_code = server_.process->Wait(signalled + absl::Seconds(5) - absl::Now());
  if (!exit_code.has_value()) server_.process->Signal(SIGKILL);
  churn_stop = true;
  churn.join();
  load.Stop();
  ASSERT_TRUE(exit_code.has_value()) << "kvindex-server did not stop within 5 s\n" << server_.process->Stderr();
  EXPECT_EQ(*exit_code, 0) << server_.process->Stderr();
  EXPECT_EQ(load.errors(), 0u) << load.last_error();

  // A new server rebuilds the whole index from the engines' replay buffers.
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(Push((*sim)->pods()));
  ExpectTruth(**sim, *client_);
}

}  // namespace
}  // namespace kvindex::testing
