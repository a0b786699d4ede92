#include "core/ingest/subscription_manager.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/events/event_decoder.h"
#include "core/index/prefix_index.h"
#include "core/ingest/internal/worker_subscription.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/ingest/fake_engine.h"
#include "tests/testing/wait.h"

namespace kvindex {
namespace {

using ::kvindex::testing::ChainBlockPayload;
using ::kvindex::testing::FakeEngine;
using ::kvindex::testing::FakeEngineOptions;
using ::kvindex::testing::PromptTokens;
using ::kvindex::testutil::WaitFor;
using ::testing::HasSubstr;

constexpr uint32_t kBlockSize = 4;
constexpr char kModel[] = "llama";

// The index becomes ready on the `ready_after`-th call (0: never).
class TestProvider : public IndexProvider {
 public:
  explicit TestProvider(PrefixIndex* index, int ready_after = 1)
      : index_(index), ready_after_(ready_after) {}
  PrefixIndex* GetIndex() override {
    const int call = ++calls;
    return ready_after_ > 0 && call >= ready_after_ ? index_ : nullptr;
  }
  std::atomic<int> calls{0};

 private:
  PrefixIndex* const index_;
  const int ready_after_;
};

ManagerOptions FastOptions() {
  ManagerOptions options;
  options.provider_poll = absl::Milliseconds(5);
  options.provider_timeout = absl::Seconds(10);
  options.replay_timeout = absl::Milliseconds(300);
  options.catch_up_after = absl::InfiniteDuration();  // replays are counted exactly (the catch-up: subscriber_test)
  options.io_threads = 2;
  return options;
}

std::unique_ptr<FakeEngine> StartEngine(FakeEngineOptions options = {}) {
  absl::StatusOr<std::unique_ptr<FakeEngine>> engine = FakeEngine::Create(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

Pod BasePod(const std::string& name, const std::string& ip) {
  Pod pod;
  pod.ns = "default";
  pod.name = name;
  pod.ip = ip;
  pod.phase = "Running";
  pod.labels[kKvEventsEnabledLabel] = "true";
  pod.labels[kModelNameKey] = kModel;
  return pod;
}

Pod EnginePod(const std::string& name, const FakeEngine& engine) {
  Pod pod = BasePod(name, engine.host());
  pod.events_port = engine.events_port();
  pod.replay_port = engine.replay_port();
  return pod;
}

// Leading blocks of the canonical prompt held by (pod, rank).
uint32_t Matched(const PrefixIndex& index, const std::string& pod, uint32_t rank = 0) {
  std::vector<uint32_t> tokens = PromptTokens(16, kBlockSize);
  MatchQuery query;
  query.model = kModel;
  query.token_ids = tokens;
  absl::StatusOr<MatchResult> result = index.Match(query);
  if (!result.ok()) return 0;
  for (const WorkerMatch& m : result->workers) {
    if (m.worker == WorkerKey{pod, rank}) return m.matched_blocks;
  }
  return 0;
}

std::optional<PodStatus> FindPod(const SubscriptionManager& manager, const std::string& key) {
  for (PodStatus& status : manager.ListPods()) {
    if (PodKey(status.pod) == key) return status;
  }
  return std::nullopt;
}

void PublishChain(FakeEngine& engine, uint32_t blocks) {
  for (uint32_t k = 0; k < blocks; ++k) engine.Publish(ChainBlockPayload(k, kBlockSize));
}

// Subscriptions without sockets, for the pod rules and the lifecycle: each
// one records what it was asked to follow, and Store() writes blocks for a
// worker as its engine would, while (and only while) it is subscribed.
class FakeSubscriptions : public SubscriptionFactory {
 public:
  absl::StatusOr<std::unique_ptr<WorkerSubscription>> Create(zmq::context_t& context, SubscriberConfig config,
                                                             PrefixIndex* index,
                                                             std::shared_ptr<WorkerStatusCell> status) override {
    absl::MutexLock lock(&mu_);
    if (!fail_with_.empty()) {
      WorkerStatus failed;
      failed.dp_rank = config.worker.dp_rank;
      failed.state = WorkerState::kFailed;
      status->Set(failed);
      return absl::UnavailableError(fail_with_);
    }
    WorkerStatus live;
    live.dp_rank = config.worker.dp_rank;
    live.state = WorkerState::kLive;
    status->Set(live);
    made_.push_back(config);
    auto subscription = std::make_unique<Fake>(this, config, index);
    live_[WorkerKeyString(config.worker)] = subscription.get();
    return subscription;
  }

  // Stores blocks 0..n-1 of the canonical prompt on `worker`; false when it is not subscribed.
  bool Store(const WorkerKey& worker, uint32_t n) {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(WorkerKeyString(worker));
    if (it == live_.end()) return false;
    for (uint32_t k = 0; k < n; ++k) {
      absl::StatusOr<EventBatch> batch = DecodeEventBatch(ChainBlockPayload(k, kBlockSize));
      EXPECT_TRUE(batch.ok()) << batch.status();
      if (batch.ok()) (void)it->second->index->Apply(worker, it->second->config.context, *batch);
    }
    return true;
  }

  // Every subscription made so far, in order, and how many are alive.
  std::vector<SubscriberConfig> made() {
    absl::MutexLock lock(&mu_);
    return made_;
  }
  size_t alive() {
    absl::MutexLock lock(&mu_);
    return live_.size();
  }
  void FailWith(std::string reason) {
    absl::MutexLock lock(&mu_);
    fail_with_ = std::move(reason);
  }

 private:
  struct Fake : WorkerSubscription {
    Fake(FakeSubscriptions* owner, SubscriberConfig config, PrefixIndex* index)
        : owner(owner), config(std::move(config)), index(index) {}
    ~Fake() override {
      absl::MutexLock lock(&owner->mu_);
      owner->live_.erase(WorkerKeyString(config.worker));
    }
    void CollectSockets(std::vector<zmq::socket_ref>&) override {}
    void OnReady(absl::Time) override {}
    void OnLiveMessage(uint64_t, std::string_view, absl::Time) override {}

    FakeSubscriptions* const owner;
    const SubscriberConfig config;
    PrefixIndex* const index;
  };

  absl::Mutex mu_;
  std::vector<SubscriberConfig> made_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Fake*> live_ ABSL_GUARDED_BY(mu_);
  std::string fail_with_ ABSL_GUARDED_BY(mu_);
};

// A manager whose subscriptions are FakeSubscriptions.
struct FakeManager {
  explicit FakeManager(ManagerOptions options = FastOptions()) : provider(&index), manager(&provider, [&] {
    options.subscription_factory = &subscriptions;
    return options;
  }()) {}

  PrefixIndex index;
  TestProvider provider;
  FakeSubscriptions subscriptions;
  SubscriptionManager manager;
};

// Publishes the canonical prompt's blocks round and round on some engines until destroyed.
class Pump {
 public:
  explicit Pump(std::vector<FakeEngine*> engines) : engines_(std::move(engines)) {
    thread_ = std::thread([this] {
      for (uint32_t k = 0; !stop_.load(); k = (k + 1) % 8) {
        // The blocks repeat; the batch ts does not, so each applied batch shows.
        const double ts = 1700000000.0 + static_cast<double>(rounds.load());
        for (FakeEngine* engine : engines_) engine->Publish(ChainBlockPayload(k, kBlockSize, ts));
        ++rounds;
        // Pacing so a 2-core machine keeps up, under TSan too (each round
        // reaches every subscriber of the engines: 50 each in the churn test);
        // nothing waits on it.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  ~Pump() {
    stop_ = true;
    thread_.join();
  }
  std::atomic<uint64_t> rounds{0};

 private:
  std::vector<FakeEngine*> engines_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(SubscriptionManagerTest, StartWaitsForTheIndexProvider) {
  PrefixIndex index;
  TestProvider provider(&index, /*ready_after=*/3);
  SubscriptionManager manager(&provider, FastOptions());
  EXPECT_TRUE(manager.Start().ok());
  EXPECT_GE(provider.calls.load(), 3);
  EXPECT_EQ(manager.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SubscriptionManagerTest, StartGivesUpWhenTheProviderNeverReady) {
  TestProvider provider(nullptr, /*ready_after=*/0);
  ManagerOptions options = FastOptions();
  options.provider_timeout = absl::Milliseconds(50);
  SubscriptionManager manager(&provider, options);
  absl::Status status = manager.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(status.message()), HasSubstr("index provider not ready after 50ms"));
  EXPECT_GE(provider.calls.load(), 2);
}

TEST(SubscriptionManagerTest, StopCancelsAWaitingStart) {
  TestProvider provider(nullptr, /*ready_after=*/0);
  ManagerOptions options = FastOptions();
  options.provider_timeout = absl::Seconds(30);
  SubscriptionManager manager(&provider, options);
  absl::Status status;
  std::thread starter([&] { status = manager.Start(); });
  ASSERT_TRUE(WaitFor([&] { return provider.calls.load() >= 1; }));
  manager.Stop();
  starter.join();
  // Cancelled, not given up after provider_timeout (that would be DEADLINE_EXCEEDED).
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
}

TEST(SubscriptionManagerTest, SyncDisabledRecordsPodsButNeverSubscribes) {
  PrefixIndex index;
  TestProvider provider(&index);
  ManagerOptions options = FastOptions();
  options.sync_enabled = false;
  SubscriptionManager manager(&provider, options);
  ASSERT_TRUE(manager.Start().ok());
  EXPECT_EQ(provider.calls.load(), 0);  // the seed does not even wait for the index
  PodAck ack = manager.Upsert(BasePod("p", "127.0.0.1"));
  EXPECT_EQ(ack.outcome, PodOutcome::kIgnored);
  EXPECT_EQ(ack.reason, "kv event sync disabled");
  std::optional<PodStatus> status = FindPod(manager, "default/p");
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->plan.subscribable);
  EXPECT_FALSE(status->subscribed);
}

TEST(SubscriptionManagerTest, NamesAreStable) {
  EXPECT_EQ(PodOutcomeName(PodOutcome::kSubscribed), "subscribed");
  EXPECT_EQ(PodOutcomeName(PodOutcome::kUpdated), "updated");
  EXPECT_EQ(PodOutcomeName(PodOutcome::kRemoved), "removed");
  EXPECT_EQ(PodOutcomeName(PodOutcome::kIgnored), "ignored");
  EXPECT_EQ(PodOutcomeName(PodOutcome::kRejected), "rejected");
  EXPECT_EQ(WorkerStateName(WorkerState::kConnecting), "connecting");
  EXPECT_EQ(WorkerStateName(WorkerState::kLive), "live");
  EXPECT_EQ(WorkerStateName(WorkerState::kReplaying), "replaying");
  EXPECT_EQ(WorkerStateName(WorkerState::kFailed), "failed");
}

TEST(SubscriptionManagerTest, PodsKnownBeforeStartAreSubscribedAndFeedTheIndex) {
  PrefixIndex index;
  TestProvider provider(&index);
  SubscriptionManager manager(&provider, FastOptions());
  auto engine = StartEngine();
  PodAck early = manager.Upsert(EnginePod("vllm-0", *engine));
  EXPECT_EQ(early.outcome, PodOutcome::kIgnored);
  EXPECT_EQ(early.reason, "recorded; subscribed when the manager starts");
  ASSERT_TRUE(manager.Start().ok());
  ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(10)));
  PublishChain(*engine, 5);
  ASSERT_TRUE(WaitFor([&] { return Matched(index, "default/vllm-0") == 5; }));

  std::optional<PodStatus> status = FindPod(manager, "default/vllm-0");
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->subscribed);
  ASSERT_EQ(status->workers.size(), 1u);
  ASSERT_TRUE(WaitFor([&] { return FindPod(manager, "default/vllm-0")->workers[0].last_seq == 4; }));
  WorkerStatus worker = FindPod(manager, "default/vllm-0")->workers[0];
  EXPECT_EQ(worker.state, WorkerState::kLive);
  EXPECT_EQ(worker.batches, 5u);
  ManagerStats stats = manager.GetStats();
  EXPECT_EQ(stats.pods, 1u);
  EXPECT_EQ(stats.subscribed_pods, 1u);
  EXPECT_EQ(stats.workers, 1u);
}

TEST(SubscriptionManagerTest, RejectsInvalidPodsWithTheReason) {
  PrefixIndex index;
  TestProvider provider(&index);
  SubscriptionManager manager(&provider, FastOptions());
  ASSERT_TRUE(manager.Start().ok());
  Pod pod = BasePod("", "127.0.0.1");
  PodAck ack = manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kRejected);
  EXPECT_EQ(ack.reason, "name: required");
  pod = BasePod("p", "not-an-ip");
  ack = manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kRejected);
  EXPECT_EQ(ack.reason, "ip: \"not-an-ip\" is not an IPv4/IPv6 literal");
  EXPECT_TRUE(manager.ListPods().empty());
}

TEST(SubscriptionManagerTest, SeedRuleTableIsRecordedNotSubscribed) {
  PrefixIndex index;
  TestProvider provider(&index);
  SubscriptionManager manager(&provider, FastOptions());
  ASSERT_TRUE(manager.Start().ok());
  struct Row {
    const char* name;
    void (*mutate)(Pod&);
    const char* reason;
  };
  const Row rows[] = {
      {"no-label", [](Pod& p) { p.labels.erase(kKvEventsEnabledLabel); }, "kv events not enabled"},
      {"pending", [](Pod& p) { p.phase = "Pending"; }, "not Running"},
      {"no-ip", [](Pod& p) { p.ip = ""; }, "pod has no IP"},
      {"no-model", [](Pod& p) { p.labels.erase(kModelNameKey); }, "model unknown"},
      {"label-false", [](Pod& p) { p.labels[kKvEventsEnabledLabel] = "false"; },
       "kv events not enabled"},
      {"label-upper-true", [](Pod& p) { p.labels[kKvEventsEnabledLabel] = "TRUE"; },
       "kv events not enabled"},
  };
  for (const Row& row : rows) {
    Pod pod = BasePod(row.name, "127.0.0.1");
    row.mutate(pod);
    PodAck ack = manager.Upsert(pod);
    EXPECT_EQ(ack.outcome, PodOutcome::kIgnored) << row.name;
    EXPECT_THAT(ack.reason, HasSubstr(row.reason)) << row.name;
    std::optional<PodStatus> status = FindPod(manager, PodKey(pod));
    ASSERT_TRUE(status.has_value()) << row.name;
    EXPECT_FALSE(status->subscribed) << row.name;
    EXPECT_FALSE(status->plan.subscribable) << row.name;
    EXPECT_THAT(status->plan.reason, HasSubstr(row.reason)) << row.name;
  }
  EXPECT_EQ(manager.GetStats().subscribed_pods, 0u);
}

TEST(SubscriptionManagerTest, DeleteUnsubscribesAndDropsBlocksBeforeItAcks) {
  FakeManager m;
  ASSERT_TRUE(m.manager.Start().ok());
  EXPECT_EQ(m.manager.Upsert(BasePod("p", "10.0.0.1")).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(m.subscriptions.Store(WorkerKey{"default/p", 0}, 3));
  EXPECT_EQ(Matched(m.index, "default/p"), 3u);
  PodAck ack = m.manager.Delete("default/p");
  EXPECT_EQ(ack.outcome, PodOutcome::kRemoved);
  EXPECT_TRUE(m.index.ListWorkers().empty());  // already, not eventually
  EXPECT_EQ(m.subscriptions.alive(), 0u);      // its subscription is gone too
  EXPECT_FALSE(m.subscriptions.Store(WorkerKey{"default/p", 0}, 3));  // nobody listens any more
  EXPECT_EQ(Matched(m.index, "default/p"), 0u);
  EXPECT_TRUE(m.manager.ListPods().empty());
  EXPECT_EQ(m.manager.Delete("default/p").outcome, PodOutcome::kIgnored);
}

TEST(SubscriptionManagerTest, PodLeavingRunningIsUnsubscribedAndItsBlocksDropped) {
  FakeManager m;
  ASSERT_TRUE(m.manager.Start().ok());
  Pod pod = BasePod("p", "10.0.0.1");
  ASSERT_EQ(m.manager.Upsert(pod).outcome, PodOutcome::kSubscribed);
  EXPECT_EQ(m.manager.Upsert(pod).outcome, PodOutcome::kUpdated);  // nothing changed
  EXPECT_EQ(m.subscriptions.made().size(), 1u);                     // and nothing resubscribed
  ASSERT_TRUE(m.subscriptions.Store(WorkerKey{"default/p", 0}, 2));
  EXPECT_EQ(Matched(m.index, "default/p"), 2u);
  pod.phase = "Failed";
  PodAck ack = m.manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kIgnored);
  EXPECT_EQ(ack.reason, "unsubscribed: phase is \"Failed\", not Running");
  EXPECT_TRUE(m.index.ListWorkers().empty());
  EXPECT_FALSE(FindPod(m.manager, "default/p")->subscribed);
  EXPECT_EQ(m.subscriptions.alive(), 0u);
}

TEST(SubscriptionManagerTest, PodIpChangeResubscribesAndDropsTheOldWorkersBlocks) {
  FakeManager m;
  ASSERT_TRUE(m.manager.Start().ok());
  Pod pod = BasePod("p", "10.0.0.1");
  pod.events_port = 5557;
  pod.replay_port = 5558;
  ASSERT_EQ(m.manager.Upsert(pod).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(m.subscriptions.Store(WorkerKey{"default/p", 0}, 4));
  EXPECT_EQ(Matched(m.index, "default/p"), 4u);

  pod.ip = "10.0.0.2";
  PodAck ack = m.manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kUpdated);
  EXPECT_EQ(ack.reason, "resubscribed: ip changed");
  // The old address's blocks were gone by the ack; the new subscription follows the new address.
  EXPECT_EQ(Matched(m.index, "default/p"), 0u);
  const std::vector<SubscriberConfig> made = m.subscriptions.made();
  ASSERT_EQ(made.size(), 2u);
  EXPECT_EQ(made[0].events_endpoint, "tcp://10.0.0.1:5557");
  EXPECT_EQ(made[1].events_endpoint, "tcp://10.0.0.2:5557");
  EXPECT_EQ(made[1].replay_endpoint, "tcp://10.0.0.2:5558");
  EXPECT_EQ(m.subscriptions.alive(), 1u);
  ASSERT_TRUE(m.subscriptions.Store(WorkerKey{"default/p", 0}, 3));
  std::optional<WorkerStats> stats = m.index.GetWorkerStats(WorkerKey{"default/p", 0});
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->blocks, 3u);
}

TEST(SubscriptionManagerTest, DpSizeTwoSubscribesEachRankOnItsPort) {
  FakeManager m;
  ASSERT_TRUE(m.manager.Start().ok());
  Pod pod = BasePod("dp", "10.0.0.1");
  pod.events_port = 6000;
  pod.replay_port = 7000;
  pod.dp_size = 2;
  ASSERT_EQ(m.manager.Upsert(pod).outcome, PodOutcome::kSubscribed);
  const std::vector<SubscriberConfig> made = m.subscriptions.made();
  ASSERT_EQ(made.size(), 2u);
  EXPECT_EQ(made[0].worker, (WorkerKey{"default/dp", 0}));
  EXPECT_EQ(made[0].events_endpoint, "tcp://10.0.0.1:6000");
  EXPECT_EQ(made[0].replay_endpoint, "tcp://10.0.0.1:7000");
  EXPECT_EQ(made[1].worker, (WorkerKey{"default/dp", 1}));
  EXPECT_EQ(made[1].events_endpoint, "tcp://10.0.0.1:6001");
  EXPECT_EQ(made[1].replay_endpoint, "tcp://10.0.0.1:7001");
  EXPECT_EQ(made[1].context.model, kModel);
  ASSERT_TRUE(m.subscriptions.Store(WorkerKey{"default/dp", 0}, 2));
  ASSERT_TRUE(m.subscriptions.Store(WorkerKey{"default/dp", 1}, 5));
  EXPECT_EQ(Matched(m.index, "default/dp", 0), 2u);
  EXPECT_EQ(Matched(m.index, "default/dp", 1), 5u);
  std::optional<PodStatus> status = FindPod(m.manager, "default/dp");
  ASSERT_TRUE(status.has_value());
  ASSERT_EQ(status->workers.size(), 2u);
  EXPECT_EQ(status->workers[0].dp_rank, 0u);
  EXPECT_EQ(status->workers[1].dp_rank, 1u);
  EXPECT_EQ(m.manager.GetStats().workers, 2u);
  EXPECT_EQ(m.manager.Delete("default/dp").outcome, PodOutcome::kRemoved);
  EXPECT_TRUE(m.index.ListWorkers().empty());
}

// A subscription that cannot be set up rejects the pod with the reason, and
// ListPods shows the worker failed.
TEST(SubscriptionManagerTest, SubscriptionThatCannotBeSetUpIsRejectedWithTheReason) {
  FakeManager m;
  ASSERT_TRUE(m.manager.Start().ok());
  m.subscriptions.FailWith("cannot subscribe: no sockets today");
  PodAck ack = m.manager.Upsert(BasePod("p", "10.0.0.1"));
  EXPECT_EQ(ack.outcome, PodOutcome::kRejected);
  EXPECT_EQ(ack.reason, "cannot subscribe: no sockets today");
  std::optional<PodStatus> status = FindPod(m.manager, "default/p");
  ASSERT_TRUE(status.has_value());
  ASSERT_EQ(status->workers.size(), 1u);
  EXPECT_EQ(status->workers[0].state, WorkerState::kFailed);
}

// max_workers is a limit by design: a pod that would go past it is rejected
// with the reason at once (never a late "Too many open files"), and fits again
// once others leave.
TEST(SubscriptionManagerTest, PodsPastMaxWorkersAreRejectedSayingSo) {
  ManagerOptions options = FastOptions();
  options.max_workers = 3;
  FakeManager m(options);
  ASSERT_TRUE(m.manager.Start().ok());
  Pod a = BasePod("a", "10.0.0.1");
  a.dp_size = 2;
  Pod b = BasePod("b", "10.0.0.2");
  b.dp_size = 2;
  EXPECT_EQ(m.manager.Upsert(a).outcome, PodOutcome::kSubscribed);
  PodAck ack = m.manager.Upsert(b);
  EXPECT_EQ(ack.outcome, PodOutcome::kRejected);
  EXPECT_EQ(ack.reason, "too many workers: 4 with this pod's 2, limit 3 (--max_workers, or what the open-files "
                        "limit allows)");
  EXPECT_FALSE(FindPod(m.manager, "default/b")->subscribed);
  EXPECT_EQ(m.manager.GetStats().workers, 2u);
  Pod c = BasePod("c", "10.0.0.3");  // one more fits
  EXPECT_EQ(m.manager.Upsert(c).outcome, PodOutcome::kSubscribed);
  EXPECT_EQ(m.manager.Delete("default/a").outcome, PodOutcome::kRemoved);
  EXPECT_EQ(m.manager.Upsert(b).outcome, PodOutcome::kSubscribed);
  EXPECT_EQ(m.manager.GetStats().workers, 3u);
  EXPECT_EQ(m.subscriptions.alive(), 3u);
}

TEST(SubscriptionManagerTest, BindModeRoutesTwoEnginesByTopic) {
  PrefixIndex index;
  TestProvider provider(&index);
  ManagerOptions options = FastOptions();
  options.events_bind = "tcp://127.0.0.1:*";
  SubscriptionManager manager(&provider, options);
  ASSERT_TRUE(manager.Start().ok());
  const std::string bound = manager.GetStats().events_bind_endpoint;
  ASSERT_THAT(bound, HasSubstr("tcp://127.0.0.1:"));

  FakeEngineOptions a_options;
  a_options.connect_to = bound;
  a_options.topic = "kv@127.0.0.1@llama";  // no port: rank 0
  auto a = StartEngine(a_options);
  FakeEngineOptions b_options;
  b_options.connect_to = bound;
  b_options.host = "127.0.0.2";  // its replay socket
  b_options.topic = "kv@127.0.0.2:6000@llama";
  auto b = StartEngine(b_options);
  FakeEngineOptions stranger_options;
  stranger_options.connect_to = bound;
  stranger_options.replay = false;
  stranger_options.topic = "kv@10.9.9.9@llama";
  auto stranger = StartEngine(stranger_options);

  Pod pod_a = BasePod("a", "127.0.0.1");
  pod_a.replay_port = a->replay_port();
  pod_a.engine_connects = true;
  Pod pod_b = BasePod("b", "127.0.0.2");
  pod_b.events_port = 6000;
  pod_b.replay_port = b->replay_port();
  pod_b.engine_connects = true;
  ASSERT_EQ(manager.Upsert(pod_a).outcome, PodOutcome::kSubscribed);
  ASSERT_EQ(manager.Upsert(pod_b).outcome, PodOutcome::kSubscribed);
  for (FakeEngine* engine : {a.get(), b.get(), stranger.get()}) {
    ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(10)));
  }
  // The first-subscribe replays are over, so b's lost batch below is a gap.
  for (const char* key : {"default/a", "default/b"}) {
    ASSERT_TRUE(WaitFor([&] { return FindPod(manager, key)->workers[0].replays_ok == 1; }));
  }
  PublishChain(*a, 3);
  b->PublishLost(ChainBlockPayload(0, kBlockSize));  // recovered through b's replay socket
  b->Publish(ChainBlockPayload(1, kBlockSize));
  PublishChain(*stranger, 2);
  stranger->SendRaw({"kv@127.0.0.1@llama", "short", "x"});  // bad seq frame
  ASSERT_TRUE(WaitFor([&] {
    return Matched(index, "default/a") == 3 && Matched(index, "default/b") == 2;
  }));
  ASSERT_TRUE(WaitFor([&] {
    ManagerStats stats = manager.GetStats();
    return stats.bind_unknown_senders == 2 && stats.bind_bad_frames == 1;
  }));
  EXPECT_EQ(manager.GetStats().bind_messages, 4u);
  // A worker's status is published after its batches reach the index.
  ASSERT_TRUE(WaitFor([&] { return FindPod(manager, "default/b")->workers[0].last_seq == 1; }));
  WorkerStatus b_worker = FindPod(manager, "default/b")->workers[0];
  EXPECT_EQ(b_worker.gaps, 1u);
  EXPECT_EQ(b_worker.last_seq, 1);
  // Seq is tracked per sender: a's seq 0..2 and b's 0..1 did not disturb each other.
  EXPECT_EQ(FindPod(manager, "default/a")->workers[0].restarts, 0u);
  EXPECT_EQ(b_worker.restarts, 0u);
}

// Bind mode is per pod: pods whose engines connect are routed by IP, port and
// model (two pods on one IP stay apart; a topic naming another model is
// dropped, never indexed under this pod's), while the other pods are still
// followed by connecting to them.
TEST(SubscriptionManagerTest, BindModeRoutesByIpPortAndModelAndStillConnectsToOtherPods) {
  PrefixIndex index;
  TestProvider provider(&index);
  ManagerOptions options = FastOptions();
  options.events_bind = "tcp://127.0.0.1:*";
  SubscriptionManager manager(&provider, options);
  ASSERT_TRUE(manager.Start().ok());
  const std::string bound = manager.GetStats().events_bind_endpoint;

  auto connecting = [&](const std::string& topic) {
    FakeEngineOptions o;
    o.connect_to = bound;
    o.replay = false;
    o.topic = topic;
    return StartEngine(o);
  };
  auto x = connecting("kv@127.0.0.1:6000@llama");
  auto y = connecting("kv@127.0.0.1:6001@qwen");
  auto impostor = connecting("kv@127.0.0.1:6000@qwen");  // x's IP and port, another model
  auto listening = StartEngine();                           // binds its own PUB, as vLLM does by default

  Pod pod_x = BasePod("x", "127.0.0.1");
  pod_x.events_port = 6000;
  pod_x.replay_port = 0;
  pod_x.engine_connects = true;
  Pod pod_y = pod_x;
  pod_y.name = "y";
  pod_y.events_port = 6001;
  pod_y.model = "qwen";
  Pod pod_z = EnginePod("z", *listening);  // engine_connects unset: kvindex connects to it
  for (const Pod& pod : {pod_x, pod_y, pod_z}) ASSERT_EQ(manager.Upsert(pod).outcome, PodOutcome::kSubscribed);
  for (FakeEngine* engine : {x.get(), y.get(), impostor.get(), listening.get()}) {
    ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(10)));
  }
  ASSERT_TRUE(WaitFor([&] { return FindPod(manager, "default/z")->workers[0].state == WorkerState::kLive; }));

  auto matched_qwen = [&](const std::string& pod) {
    std::vector<uint32_t> tokens = PromptTokens(16, kBlockSize);
    MatchQuery query;
    query.model = "qwen";
    query.token_ids = tokens;
    absl::StatusOr<MatchResult> result = index.Match(query);
    uint32_t blocks = 0;
    for (const WorkerMatch& m : result.ok() ? result->workers : std::vector<WorkerMatch>{}) {
      if (m.worker.pod == pod) blocks = m.matched_blocks;
    }
    return blocks;
  };
  // A connection's first messages may arrive before its route is in place, so
  // each engine publishes its chain until it shows.
  ASSERT_TRUE(WaitFor([&] {
    PublishChain(*x, 3);
    PublishChain(*y, 5);
    PublishChain(*listening, 2);
    PublishChain(*impostor, 8);
    return Matched(index, "default/x") == 3 && matched_qwen("default/y") == 5 && Matched(index, "default/z") == 2 &&
           manager.GetStats().bind_unknown_senders > 0;  // the impostor's messages arrived and were counted
  }));
  EXPECT_EQ(matched_qwen("default/x"), 0u);  // the impostor's qwen blocks went nowhere
  EXPECT_EQ(Matched(index, "default/y"), 0u);
}

TEST(SubscriptionManagerTest, EngineConnectsWithoutABindEndpointIsNotFollowed) {
  FakeManager m;
  ASSERT_TRUE(m.manager.Start().ok());
  Pod pod = BasePod("p", "10.0.0.1");
  pod.engine_connects = true;
  PodAck ack = m.manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kIgnored);
  EXPECT_EQ(ack.reason, "engine_connects, but kvindex has no --events_bind endpoint");
  EXPECT_TRUE(m.subscriptions.made().empty());
  pod.engine_connects = false;
  ack = m.manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kSubscribed);
  ASSERT_EQ(m.subscriptions.made().size(), 1u);
  EXPECT_EQ(m.subscriptions.made()[0].events_endpoint, "tcp://10.0.0.1:5557");
}

TEST(SubscriptionManagerTest, APodOfAModelTheReplicaDoesNotServeIsIgnoredSayingWhy) {
  ManagerOptions options = FastOptions();
  absl::StatusOr<ModelFilter> models = ModelFilter::Create("llama-.*");
  ASSERT_TRUE(models.ok());
  options.models = *models;
  FakeManager m(options);
  ASSERT_TRUE(m.manager.Start().ok());
  Pod pod = BasePod("p", "10.0.0.1");
  pod.model = "qwen";
  PodAck ack = m.manager.Upsert(pod);
  EXPECT_EQ(ack.outcome, PodOutcome::kIgnored);
  EXPECT_EQ(ack.reason, "model \"qwen\" is not served by this replica (--models=llama-.*)");
  EXPECT_TRUE(m.subscriptions.made().empty());
  pod.model = "llama-3";
  EXPECT_EQ(m.manager.Upsert(pod).outcome, PodOutcome::kSubscribed);
}

TEST(ModelFilterTest, TheWholeNameMustMatchAndABadPatternIsAnError) {
  absl::StatusOr<ModelFilter> filter = ModelFilter::Create("llama-.*|qwen");
  ASSERT_TRUE(filter.ok());
  EXPECT_TRUE(filter->Serves("llama-3"));
  EXPECT_TRUE(filter->Serves("qwen"));
  EXPECT_FALSE(filter->Serves("qwen2"));  // the whole name
  EXPECT_FALSE(filter->Serves("my-llama-3"));
  EXPECT_TRUE(ModelFilter().Serves("anything"));
  absl::StatusOr<ModelFilter> bad = ModelFilter::Create("llama-(");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("--models=llama-("));
}

TEST(SubscriptionManagerTest, TwoHundredPodsAddedAndDeletedWhileEventsFlow) {
  PrefixIndex index;
  TestProvider provider(&index);
  SubscriptionManager manager(&provider, FastOptions());
  ASSERT_TRUE(manager.Start().ok());
  std::vector<std::unique_ptr<FakeEngine>> engines;
  for (int i = 0; i < 4; ++i) {
    FakeEngineOptions options;
    options.buffer_steps = 16;
    engines.push_back(StartEngine(options));
  }
  // A steady pod whose ingestion must never stall.
  ASSERT_EQ(manager.Upsert(EnginePod("steady", *engines[0])).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engines[0]->WaitForSubscribers(1, absl::Seconds(10)));
  auto steady_batches = [&] { return FindPod(manager, "default/steady")->workers[0].batches; };

  Pump pump({engines[0].get(), engines[1].get(), engines[2].get(), engines[3].get()});
  ASSERT_TRUE(WaitFor([&] { return steady_batches() > 0; }));

  std::vector<Pod> pods;
  for (int i = 0; i < 200; ++i) pods.push_back(EnginePod(absl::StrCat("churn-", i), *engines[i % 4]));
  pods.push_back(EnginePod("steady", *engines[0]));
  for (const PodAck& ack : manager.ApplySnapshot(pods)) {
    EXPECT_TRUE(ack.outcome == PodOutcome::kSubscribed || ack.pod == "default/steady")
        << ack.pod << " " << PodOutcomeName(ack.outcome) << " " << ack.reason;
  }
  EXPECT_EQ(manager.GetStats().subscribed_pods, 201u);
  // Events reach the new pods.
  ASSERT_TRUE(WaitFor([&] {
    for (const PodStatus& status : manager.ListPods()) {
      if (status.workers.empty() || status.workers[0].batches == 0) return false;
    }
    return true;
  }, absl::Seconds(30)));
  const uint64_t before = steady_batches();
  for (int i = 0; i < 200; i += 2) {
    EXPECT_EQ(manager.Delete(absl::StrCat("default/churn-", i)).outcome, PodOutcome::kRemoved);
  }
  for (int i = 0; i < 200; ++i) {  // re-add half, delete the rest
    if (i % 2 == 0) {
      EXPECT_EQ(manager.Upsert(pods[i]).outcome, PodOutcome::kSubscribed);
    } else {
      EXPECT_EQ(manager.Delete(absl::StrCat("default/churn-", i)).outcome, PodOutcome::kRemoved);
    }
  }
  for (int i = 0; i < 200; i += 2) manager.Delete(absl::StrCat("default/churn-", i));
  // The steady pod kept ingesting throughout.
  ASSERT_TRUE(WaitFor([&] { return steady_batches() > before + 10; }));
  ASSERT_TRUE(WaitFor([&] {
    std::vector<WorkerStats> workers = index.ListWorkers();
    return workers.size() == 1 && workers[0].worker.pod == "default/steady";
  }, absl::Seconds(20)));
  EXPECT_EQ(manager.ListPods().size(), 1u);
  EXPECT_GT(Matched(index, "default/steady"), 0u);
  EXPECT_EQ(FindPod(manager, "default/steady")->workers[0].restarts, 0u);
}

TEST(SubscriptionManagerTest, StopWhileBusyJoinsAndIgnoresLaterCalls) {
  PrefixIndex index;
  TestProvider provider(&index);
  SubscriptionManager manager(&provider, FastOptions());
  ASSERT_TRUE(manager.Start().ok());
  std::vector<std::unique_ptr<FakeEngine>> engines;
  for (int i = 0; i < 2; ++i) engines.push_back(StartEngine());
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(manager.Upsert(EnginePod(absl::StrCat("busy-", i), *engines[i % 2])).outcome,
              PodOutcome::kSubscribed);
  }
  Pump pump({engines[0].get(), engines[1].get()});
  // What moves while batches are applied (the pump's blocks repeat, so the
  // entries do not): each worker's last batch ts in the index, and the batches
  // each subscription counts.
  using Applied = std::pair<std::map<std::string, double>, std::map<std::string, uint64_t>>;
  auto applied = [&] {
    Applied now;
    for (const WorkerStats& w : index.ListWorkers()) now.first[WorkerKeyString(w.worker)] = w.last_event_ts;
    for (const PodStatus& pod : manager.ListPods()) {
      for (const WorkerStatus& w : pod.workers) now.second[PodKey(pod.pod)] += w.batches;
    }
    return now;
  };
  ASSERT_TRUE(WaitFor([&] { return index.Stats().entries > 0; }));
  const Applied busy = applied();
  ASSERT_TRUE(WaitFor([&] { return applied().first != busy.first; })) << "batches are being applied";
  // Upserts racing with Stop must neither crash nor hang.
  std::thread churn([&] {
    for (int i = 0; i < 50; ++i) manager.Upsert(EnginePod(absl::StrCat("late-", i), *engines[0]));
  });
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    manager.Stop();
    stopped = true;
  });
  if (!WaitFor([&] { return stopped.load(); }, absl::Seconds(60))) {
    ADD_FAILURE() << "Stop() has not returned after 60 s";
    std::abort();  // the stopper still uses the manager: no clean way out
  }
  stopper.join();
  churn.join();
  manager.Stop();  // idempotent
  PodAck ack = manager.Upsert(EnginePod("after", *engines[0]));
  EXPECT_EQ(ack.outcome, PodOutcome::kIgnored);
  EXPECT_EQ(ack.reason, "manager stopped");
  EXPECT_EQ(manager.Delete("default/busy-0").outcome, PodOutcome::kIgnored);
  EXPECT_EQ(manager.Start().code(), absl::StatusCode::kFailedPrecondition);
  // Nothing is applied after Stop: the engines keep publishing, their
  // subscriptions are gone, and what moved before stays put.
  const Applied at_stop = applied();
  const uint64_t rounds = pump.rounds.load();
  ASSERT_TRUE(WaitFor([&] { return engines[0]->subscribers() == 0 && engines[1]->subscribers() == 0; }));
  ASSERT_TRUE(WaitFor([&] { return pump.rounds.load() > rounds + 50; }));
  EXPECT_EQ(applied(), at_stop);
}

TEST(SubscriptionManagerTest, SnapshotReplacesTheKnownSet) {
  PrefixIndex index;
  TestProvider provider(&index);
  SubscriptionManager manager(&provider, FastOptions());
  ASSERT_TRUE(manager.Start().ok());
  auto engine = StartEngine();
  std::vector<PodAck> acks = manager.ApplySnapshot(
      {EnginePod("one", *engine), EnginePod("two", *engine), BasePod("three", "")});
  ASSERT_EQ(acks.size(), 3u);
  EXPECT_EQ(acks[0].outcome, PodOutcome::kSubscribed);
  EXPECT_EQ(acks[1].outcome, PodOutcome::kSubscribed);
  EXPECT_EQ(acks[2].outcome, PodOutcome::kIgnored);
  ASSERT_TRUE(engine->WaitForSubscribers(2, absl::Seconds(10)));
  PublishChain(*engine, 2);
  ASSERT_TRUE(WaitFor([&] {
    return Matched(index, "default/one") == 2 && Matched(index, "default/two") == 2;
  }));
  acks = manager.ApplySnapshot({EnginePod("two", *engine)});
  ASSERT_EQ(acks.size(), 3u);
  EXPECT_EQ(acks[0].outcome, PodOutcome::kUpdated);
  EXPECT_EQ(acks[1].outcome, PodOutcome::kRemoved);
  EXPECT_EQ(acks[2].outcome, PodOutcome::kRemoved);
  ASSERT_TRUE(WaitFor([&] { return index.ListWorkers().size() == 1; }));
  EXPECT_EQ(Matched(index, "default/two"), 2u);
  ASSERT_EQ(manager.ListPods().size(), 1u);
}

// A removal that takes longer than the ack's wait is not acked kRemoved (the
// pod would still match): kRemovalPending, counted; it then completes alone.
TEST(SubscriptionManagerTest, ARemovalHeldPastTheTimeoutIsAckedPendingAndCounted) {
  PrefixIndex index;
  TestProvider provider(&index);
  absl::Notification release;
  std::atomic<int> held{0};
  ManagerOptions options = FastOptions();
  options.subscribe_timeout = absl::Milliseconds(200);
  options.before_removal = [&](std::string_view pod) {
    if (pod == "default/held" || pod == "default/snap") {
      held.fetch_add(1);
      release.WaitForNotification();
    }
  };
  SubscriptionManager manager(&provider, options);
  ASSERT_TRUE(manager.Start().ok());
  auto engine = StartEngine();
  ASSERT_EQ(manager.Upsert(EnginePod("held", *engine)).outcome, PodOutcome::kSubscribed);
  ASSERT_TRUE(engine->WaitForSubscribers(1, absl::Seconds(10)));
  PublishChain(*engine, 3);
  ASSERT_TRUE(WaitFor([&] { return Matched(index, "default/held") == 3; }));

  const PodAck ack = manager.Delete("default/held");
  EXPECT_EQ(ack.outcome, PodOutcome::kRemovalPending);
  EXPECT_EQ(ack.reason, "blocks still being dropped after 200ms");
  EXPECT_EQ(PodOutcomeName(ack.outcome), "removal_pending");
  EXPECT_EQ(manager.GetStats().removals_pending, 1u);
  EXPECT_EQ(held.load(), 1);
  EXPECT_EQ(Matched(index, "default/held"), 3u);  // what the ack warns about
  EXPECT_TRUE(manager.ListPods().empty());        // but the pod is forgotten

  release.Notify();
  ASSERT_TRUE(WaitFor([&] { return index.ListWorkers().empty(); }));
  // Not held: an ordinary kRemoved, the counter unchanged.
  auto other = StartEngine();
  ASSERT_EQ(manager.Upsert(EnginePod("free", *other)).outcome, PodOutcome::kSubscribed);
  EXPECT_EQ(manager.Delete("default/free").outcome, PodOutcome::kRemoved);
  EXPECT_EQ(manager.GetStats().removals_pending, 1u);
}

TEST(SubscriptionManagerTest, ASnapshotRemovalHeldPastTheTimeoutIsAckedPending) {
  PrefixIndex index;
  TestProvider provider(&index);
  absl::Notification release;
  ManagerOptions options = FastOptions();
  options.subscribe_timeout = absl::Milliseconds(200);
  options.before_removal = [&](std::string_view pod) {
    if (pod == "default/snap") release.WaitForNotification();
  };
  SubscriptionManager manager(&provider, options);
  ASSERT_TRUE(manager.Start().ok());
  auto held = StartEngine();
  auto kept = StartEngine();
  ASSERT_EQ(manager.Upsert(EnginePod("snap", *held)).outcome, PodOutcome::kSubscribed);
  ASSERT_EQ(manager.Upsert(EnginePod("gone", *kept)).outcome, PodOutcome::kSubscribed);
  const std::vector<PodAck> acks = manager.ApplySnapshot({});
  ASSERT_EQ(acks.size(), 2u);
  for (const PodAck& ack : acks) {
    if (ack.pod == "default/snap") {
      EXPECT_EQ(ack.outcome, PodOutcome::kRemovalPending);
      EXPECT_EQ(ack.reason, "not in snapshot; blocks still being dropped after 200ms");
    } else {
      EXPECT_EQ(ack.pod, "default/gone");
      EXPECT_EQ(ack.outcome, PodOutcome::kRemoved);
      EXPECT_EQ(ack.reason, "not in snapshot");
    }
  }
  EXPECT_EQ(manager.GetStats().removals_pending, 1u);
  release.Notify();
}

// Workers restored from a snapshot (ManagerOptions::resume): the one whose pod
// is the engine it was saved under resumes from its cursor; one whose pod
// moved, and one whose pod Start does not subscribe, lose the restored blocks.
TEST(SubscriptionManagerTest, RestoredWorkersResumeOnlyUnderTheEngineTheyWereSavedUnder) {
  const Pod same = BasePod("same", "10.0.0.1"), moved = BasePod("moved", "10.0.0.2"), gone = BasePod("gone", "10.0.0.3");
  ManagerOptions options = FastOptions();
  options.resume = {WorkerResume{WorkerKey{"default/same", 0}, same, BatchCursor{41, 7, false}},
                    WorkerResume{WorkerKey{"default/moved", 0}, moved, BatchCursor{5, 1, true}},
                    WorkerResume{WorkerKey{"default/gone", 0}, gone, BatchCursor{9, 2, true}}};
  FakeManager m(options);
  for (const char* pod : {"default/same", "default/moved", "default/gone"}) {
    absl::StatusOr<EventBatch> batch = DecodeEventBatch(ChainBlockPayload(0, kBlockSize));
    ASSERT_TRUE(batch.ok());
    (void)m.index.Apply(WorkerKey{pod, 0}, WorkerContext{kModel, ""}, *batch);
  }
  Pod moved_now = moved;
  moved_now.ip = "10.0.0.9";
  EXPECT_EQ(m.manager.Upsert(same).outcome, PodOutcome::kIgnored);  // recorded until Start
  EXPECT_EQ(m.manager.Upsert(moved_now).outcome, PodOutcome::kIgnored);
  ASSERT_TRUE(m.manager.Start().ok());

  std::vector<SubscriberConfig> made = m.subscriptions.made();
  ASSERT_EQ(made.size(), 2u);
  std::sort(made.begin(), made.end(), [](const auto& a, const auto& b) { return a.worker < b.worker; });
  EXPECT_EQ(made[0].worker, (WorkerKey{"default/moved", 0}));
  EXPECT_EQ(made[0].resume, std::nullopt);
  EXPECT_EQ(made[1].worker, (WorkerKey{"default/same", 0}));
  EXPECT_EQ(made[1].resume, (BatchCursor{41, 7, false}));
  // The moved pod's blocks went before its subscription was made; the unfollowed one's at Start.
  EXPECT_EQ(m.index.WorkerKeys(), std::vector<WorkerKey>{(WorkerKey{"default/same", 0})});

  // Used once: a later subscription of a saved worker starts from 0.
  EXPECT_EQ(m.manager.Upsert(gone).outcome, PodOutcome::kSubscribed);
  made = m.subscriptions.made();
  ASSERT_EQ(made.size(), 3u);
  EXPECT_EQ(made[2].resume, std::nullopt);
}

}  // namespace
}  // namespace kvindex
