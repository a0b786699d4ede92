#include "core/ingest/subscription_manager.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/completion.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/io_threads.h"
#include "core/ingest/internal/pod_removal.h"
#include "core/ingest/internal/pod_subscription.h"
#include "core/ingest/internal/resume_book.h"
#include "core/ingest/internal/subscriber.h"
#include "core/ingest/internal/subscription_identity.h"
#include "spdlog/spdlog.h"
#include "zmq.hpp"

namespace kvindex {
namespace {

PodAck Ack(std::string pod, PodOutcome outcome, std::string reason) {
  return PodAck{std::move(pod), outcome, std::move(reason)};
}

}  // namespace

std::string_view PodOutcomeName(PodOutcome outcome) {
  switch (outcome) {
    case PodOutcome::kSubscribed:
      return "subscribed";
    case PodOutcome::kUpdated:
      return "updated";
    case PodOutcome::kRemoved:
      return "removed";
    case PodOutcome::kIgnored:
      return "ignored";
    case PodOutcome::kRejected:
      return "rejected";
    case PodOutcome::kRemovalPending:
      return "removal_pending";
  }
  return "unknown";
}

class SubscriptionManager::Impl {
 public:
  Impl(IndexProvider* provider, ManagerOptions options)
      : provider_(provider),
        options_(std::move(options)),
        factory_(options_.subscription_factory != nullptr ? *options_.subscription_factory : ZmqSubscriptions()),
        resume_(options_.resume) {}
  ~Impl() { Stop(); }

  absl::Status Start() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  PodAck Upsert(const Pod& pod) ABSL_LOCKS_EXCLUDED(mu_);
  PodAck Delete(std::string_view pod_key) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<PodAck> ApplySnapshot(const std::vector<Pod>& pods) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<PodStatus> ListPods(std::string_view after, size_t limit) const ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<PodStatus> FindPod(std::string_view key) const ABSL_LOCKS_EXCLUDED(mu_);
  ManagerStats GetStats() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  enum class State { kNew, kStarting, kRunning, kStopped };

  struct PodEntry {
    Pod pod;
    PodPlan plan;
    bool subscribed = false;
    uint64_t subscription = 0;      // id of the current subscription (0: none)
    std::vector<uint64_t> task_ids;  // one per dp rank, on thread `thread`
    size_t thread = 0;
    bool bound = false;  // its live events come through the bind receiver (on thread 0)
    std::vector<std::shared_ptr<WorkerStatusCell>> workers;
  };

  // An Upsert decided under the lock, maybe waiting for its sockets.
  struct Pending {
    PodAck ack;
    std::shared_ptr<Completion> removal;     // set when an old subscription's removal was posted
    std::shared_ptr<Completion> completion;  // set when a subscription was posted
    std::string key;
    uint64_t subscription = 0;
  };

  // Why subscribing `entry` (instead of its current subscription) would go
  // past max_workers; nullopt when it fits.
  std::optional<std::string> OverWorkerLimit(const PodEntry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const size_t after = workers_ - (entry.subscribed ? entry.task_ids.size() : 0) + entry.plan.dp_size;
    if (after <= options_.max_workers) return std::nullopt;
    return absl::StrCat("too many workers: ", after, " with this pod's ", entry.plan.dp_size, ", limit ",
                        options_.max_workers, " (--max_workers, or what the open-files limit allows)");
  }
  bool WantSubscribed(const PodEntry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return state_ == State::kRunning && options_.sync_enabled && entry.plan.subscribable && !Unreachable(entry);
  }
  // A pod whose engines would connect to a bind endpoint kvindex does not have.
  bool Unreachable(const PodEntry& entry) const {
    return entry.plan.engine_connects && options_.events_bind.empty();
  }
  // The bind receiver that routes the entry's live events; null when it is followed by connecting.
  BindReceiver* ReceiverOf(const PodEntry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return entry.bound ? io_.bind_receiver : nullptr;
  }
  Pending UpsertLocked(const Pod& pod) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Posts the creation of the entry's sockets; returns its completion.
  std::shared_ptr<Completion> SubscribeLocked(const std::string& key, PodEntry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Posts the removal of the entry's sockets and blocks; returns its
  // completion (null when it was not subscribed). Acks wait for it outside the
  // lock, so that a pod acked as removed or unsubscribed no longer matches.
  std::shared_ptr<Completion> UnsubscribeLocked(const std::string& key, PodEntry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for a posted subscription and turns the result into the ack.
  PodAck Finish(Pending pending) ABSL_LOCKS_EXCLUDED(mu_);
  size_t ThreadFor(const std::string& key, bool bound) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  IndexProvider* const provider_;
  const ManagerOptions options_;
  SubscriptionFactory& factory_;
  BindCounters bind_counters_;  // outlives the threads that write it
  std::atomic<uint64_t> removals_pending_{0};

  // Whether a posted removal dropped the blocks within subscribe_timeout
  // (false also when it could not run: the manager is stopping).
  bool WaitForRemoval(Completion* removal) {
    if (removal == nullptr) return true;
    const std::optional<absl::Status> status = removal->Wait(options_.subscribe_timeout);
    return status.has_value() && status->ok();
  }
  // The ack of a removal that did not finish in time (counted).
  PodAck RemovalPending(std::string pod, std::string_view why) {
    removals_pending_.fetch_add(1, std::memory_order_relaxed);
    return Ack(std::move(pod), PodOutcome::kRemovalPending, absl::StrCat(absl::string_view(why.data(), why.size()), PendingReason()));
  }
  std::string PendingReason() const {
    return absl::StrCat("blocks still being dropped after ", absl::FormatDuration(options_.subscribe_timeout));
  }

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kNew;
  std::map<std::string, PodEntry, std::less<>> pods_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = kFirstWorkerTask;
  size_t workers_ ABSL_GUARDED_BY(mu_) = 0;  // subscribed workers: the task_ids of subscribed pods
  PrefixIndex* index_ ABSL_GUARDED_BY(mu_) = nullptr;
  IoThreads io_ ABSL_GUARDED_BY(mu_);  // empty until started
  ResumeBook resume_ ABSL_GUARDED_BY(mu_);  // saved workers not yet taken
};

absl::Status SubscriptionManager::Impl::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kStopped) return absl::FailedPreconditionError("manager stopped");
    if (state_ != State::kNew) return absl::FailedPreconditionError("manager already started");
    state_ = State::kStarting;
  }
  if (!options_.sync_enabled) {
    spdlog::info("kv event sync is disabled: pods are recorded, never subscribed");
    absl::MutexLock lock(&mu_);
    if (!resume_.empty()) resume_.DropUnused(provider_->GetIndex());
    if (state_ == State::kStopped) return absl::CancelledError("manager stopped while starting");
    state_ = State::kRunning;
    return absl::OkStatus();
  }

  // Wait for the index, as the seed does (poll, bounded).
  const absl::Time deadline = absl::Now() + options_.provider_timeout;
  PrefixIndex* index = nullptr;
  while ((index = provider_->GetIndex()) == nullptr) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    if (state_ == State::kStopped) return absl::CancelledError("manager stopped while starting");
    if (now >= deadline) {
      state_ = State::kNew;
      return absl::DeadlineExceededError(absl::StrCat(
          "index provider not ready after ", absl::FormatDuration(options_.provider_timeout)));
    }
    auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return state_ == State::kStopped;
    };
    mu_.AwaitWithTimeout(absl::Condition(&stopped), std::min(options_.provider_poll, deadline - now));
  }

  absl::StatusOr<IoThreads> io =
      IoThreads::Start(options_.io_threads, options_.max_workers, options_.max_concurrent_replays,
                       options_.events_bind, &bind_counters_);
  if (!io.ok()) {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kStopped) state_ = State::kNew;
    return io.status();
  }
  const size_t n = io->threads.size();

  std::vector<Pending> pending;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kStopped) {
      io->Stop();
      return absl::CancelledError("manager stopped while starting");
    }
    index_ = index;
    io_ = *std::move(io);
    state_ = State::kRunning;
    for (auto& [key, entry] : pods_) {
      if (!WantSubscribed(entry)) continue;
      if (std::optional<std::string> full = OverWorkerLimit(entry); full.has_value()) {
        spdlog::error("pod {}: not subscribed: {}", key, *full);
        continue;
      }
      Pending p;
      p.key = key;
      p.ack = Ack(key, PodOutcome::kSubscribed, "");
      p.completion = SubscribeLocked(key, entry);
      p.subscription = entry.subscription;
      pending.push_back(std::move(p));
    }
    resume_.DropUnused(index_);
  }
  // Each pod's setup is bounded; one failure does not stop the others.
  for (Pending& p : pending) {
    PodAck ack = Finish(std::move(p));
    if (ack.outcome == PodOutcome::kRejected) {
      spdlog::error("pod {}: subscribe failed: {}", ack.pod, ack.reason);
    }
  }
  spdlog::info("subscription manager started: {} pods subscribed, {} I/O threads", pending.size(),
               n);
  return absl::OkStatus();
}

void SubscriptionManager::Impl::Stop() {
  IoThreads io;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kStopped) return;
    state_ = State::kStopped;
    std::swap(io, io_);
  }
  // Each thread runs what was posted (unsubscribes drop blocks), closes its
  // sockets and joins; then the context can terminate.
  io.Stop();
  spdlog::info("subscription manager stopped");
}

size_t SubscriptionManager::Impl::ThreadFor(const std::string& key, bool bound) const {
  // The bind receiver routes on its own thread, 0; otherwise a pod always maps
  // to the same thread, so its unsubscribe runs before its next subscribe.
  if (bound || io_.threads.size() <= 1) return 0;
  return absl::Hash<std::string>{}(key) % io_.threads.size();
}

std::shared_ptr<Completion> SubscriptionManager::Impl::SubscribeLocked(const std::string& key,
                                                                       PodEntry& entry) {
  entry.subscribed = true;
  entry.subscription = next_id_++;
  entry.bound = io_.bind_receiver != nullptr && entry.plan.engine_connects;
  entry.thread = ThreadFor(key, entry.bound);
  entry.task_ids.clear();
  entry.workers.clear();
  workers_ += entry.plan.dp_size;

  PodSubscription subscription;
  for (uint32_t rank = 0; rank < entry.plan.dp_size; ++rank) {
    SubscriberConfig config;
    config.worker = WorkerKey{key, rank};
    bool stale = false;
    config.resume = resume_.Take(config.worker, entry.pod, entry.plan, stale);
    if (stale) subscription.stale.push_back(config.worker);
    config.context = WorkerContext{entry.plan.model, entry.plan.default_lora};
    if (!entry.bound) {
      config.events_endpoint = TcpEndpoint(entry.pod.ip, entry.plan.events_port + rank);
      config.topic = entry.pod.topic;
    }
    if (entry.plan.replay_port.has_value()) {
      config.replay_endpoint = TcpEndpoint(entry.pod.ip, *entry.plan.replay_port + rank);
    }
    config.replay_timeout = options_.replay_timeout;
    config.catch_up_after = options_.catch_up_after;
    config.max_backlog = options_.max_backlog;
    config.metrics = options_.metrics;
    config.replay_slots = io_.replay_slots[entry.thread].get();
    subscription.configs.push_back(std::move(config));
    entry.task_ids.push_back(next_id_++);
    entry.workers.push_back(std::make_shared<WorkerStatusCell>(rank));
  }
  subscription.task_ids = entry.task_ids;
  subscription.cells = entry.workers;
  subscription.index = index_;
  subscription.receiver = ReceiverOf(entry);
  subscription.ip = entry.pod.ip;
  subscription.events_port = entry.plan.events_port;
  subscription.model = entry.plan.model;
  std::shared_ptr<Completion> completion =
      PostSubscription(*io_.threads[entry.thread], std::move(subscription), factory_);

  spdlog::info("pod {}: subscribing ({} {}, model {}, dp_size {})", key,
               entry.bound ? "engine connects, ip" : "ip", entry.pod.ip, entry.plan.model,
               entry.plan.dp_size);
  return completion;
}

std::shared_ptr<Completion> SubscriptionManager::Impl::UnsubscribeLocked(const std::string& key,
                                                                         PodEntry& entry) {
  if (!entry.subscribed) return nullptr;
  entry.subscribed = false;
  entry.subscription = 0;
  workers_ -= entry.task_ids.size();
  std::shared_ptr<Completion> removal =
      PostRemoval(*io_.threads[entry.thread], std::move(entry.task_ids), key, index_, ReceiverOf(entry),
                  options_.before_removal);
  entry.task_ids.clear();
  entry.workers.clear();
  spdlog::info("pod {}: unsubscribed, blocks dropped", key);
  return removal;
}

SubscriptionManager::Impl::Pending SubscriptionManager::Impl::UpsertLocked(const Pod& pod) {
  Pending out;
  out.key = PodKey(pod);
  out.ack.pod = out.key;
  if (state_ == State::kStopped) {
    out.ack = Ack(out.key, PodOutcome::kIgnored, "manager stopped");
    return out;
  }
  if (absl::Status valid = ValidatePod(pod, options_.pod_limits); !valid.ok()) {
    out.ack = Ack(out.key, PodOutcome::kRejected, std::string(valid.message()));
    return out;
  }
  auto it = pods_.find(out.key);
  const bool known = it != pods_.end();
  if (!known && pods_.size() >= options_.max_pods) {
    out.ack = Ack(out.key, PodOutcome::kRejected,
                  absl::StrCat("too many pods (limit ", options_.max_pods, ")"));
    return out;
  }
  if (!known) it = pods_.emplace(out.key, PodEntry{}).first;
  PodEntry& entry = it->second;
  const SubscriptionIdentity old_identity = IdentityOf(entry.pod, entry.plan);
  entry.pod = pod;
  entry.plan = PlanPod(pod);
  if (entry.plan.subscribable && !options_.models.Serves(entry.plan.model)) {
    entry.plan.subscribable = false;
    entry.plan.reason = options_.models.Refusal(entry.plan.model);
  }
  const bool want = WantSubscribed(entry);
  const std::string changed = Changes(old_identity, IdentityOf(entry.pod, entry.plan));

  if (!want) {
    const bool was = entry.subscribed;
    out.removal = UnsubscribeLocked(out.key, entry);
    std::string why = !entry.plan.subscribable ? entry.plan.reason
                      : Unreachable(entry)
                          ? std::string("engine_connects, but kvindex has no --events_bind endpoint")
                      : !options_.sync_enabled ? std::string("kv event sync disabled")
                                               : std::string("recorded; subscribed when the manager starts");
    if (was) why = absl::StrCat("unsubscribed: ", why);
    out.ack = Ack(out.key, PodOutcome::kIgnored, std::move(why));
    return out;
  }
  if (entry.subscribed && changed.empty()) {
    out.ack = Ack(out.key, PodOutcome::kUpdated, "no subscription change");
    return out;
  }
  const bool resubscribe = entry.subscribed;
  if (std::optional<std::string> full = OverWorkerLimit(entry); full.has_value()) {
    out.removal = UnsubscribeLocked(out.key, entry);
    out.ack = Ack(out.key, PodOutcome::kRejected, *std::move(full));
    return out;
  }
  out.removal = UnsubscribeLocked(out.key, entry);
  out.completion = SubscribeLocked(out.key, entry);
  out.subscription = entry.subscription;
  out.ack = resubscribe ? Ack(out.key, PodOutcome::kUpdated, absl::StrCat("resubscribed: ", changed, " changed"))
                        : Ack(out.key, PodOutcome::kSubscribed, "");
  return out;
}

PodAck SubscriptionManager::Impl::Finish(Pending pending) {
  if (!WaitForRemoval(pending.removal.get())) {
    absl::StrAppend(&pending.ack.reason, pending.ack.reason.empty() ? "" : "; ", "old ", PendingReason());
  }
  if (pending.completion == nullptr) return std::move(pending.ack);
  std::optional<absl::Status> status = pending.completion->Wait(options_.subscribe_timeout);
  if (!status.has_value()) {
    pending.ack.reason = absl::StrCat("sockets still being set up after ",
                                      absl::FormatDuration(options_.subscribe_timeout));
    return std::move(pending.ack);
  }
  if (status->ok()) return std::move(pending.ack);
  {
    // Not subscribed after all: the next Upsert of this pod tries again.
    absl::MutexLock lock(&mu_);
    auto it = pods_.find(pending.key);
    if (it != pods_.end() && it->second.subscription == pending.subscription &&
        state_ == State::kRunning) {
      it->second.subscribed = false;
      it->second.subscription = 0;
      workers_ -= it->second.task_ids.size();
      PostRemoval(*io_.threads[it->second.thread], std::move(it->second.task_ids), pending.key,
                  index_, ReceiverOf(it->second), options_.before_removal);
      it->second.task_ids.clear();  // the cells stay: ListPods shows the failed workers
    }
  }
  return Ack(pending.key, PodOutcome::kRejected, std::string(status->message()));
}

PodAck SubscriptionManager::Impl::Upsert(const Pod& pod) {
  Pending pending;
  {
    absl::MutexLock lock(&mu_);
    pending = UpsertLocked(pod);
  }
  return Finish(std::move(pending));
}

PodAck SubscriptionManager::Impl::Delete(std::string_view pod_key) {
  const std::string key(pod_key);
  std::shared_ptr<Completion> removal;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kStopped) return Ack(key, PodOutcome::kIgnored, "manager stopped");
    auto it = pods_.find(key);
    if (it == pods_.end()) return Ack(key, PodOutcome::kIgnored, "unknown pod");
    removal = UnsubscribeLocked(key, it->second);
    pods_.erase(it);
  }
  if (!WaitForRemoval(removal.get())) return RemovalPending(key, "");
  return Ack(key, PodOutcome::kRemoved, "");
}

std::vector<PodAck> SubscriptionManager::Impl::ApplySnapshot(const std::vector<Pod>& pods) {
  std::vector<Pending> pending;
  std::vector<PodAck> acks;
  std::vector<std::shared_ptr<Completion>> removals;  // removals[i]: of acks[i], or null
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_set<std::string> present;
    for (const Pod& pod : pods) {
      present.insert(PodKey(pod));
      pending.push_back(UpsertLocked(pod));
    }
    if (state_ != State::kStopped) {
      for (auto it = pods_.begin(); it != pods_.end();) {
        if (present.contains(it->first)) {
          ++it;
          continue;
        }
        removals.push_back(UnsubscribeLocked(it->first, it->second));
        acks.push_back(Ack(it->first, PodOutcome::kRemoved, "not in snapshot"));
        it = pods_.erase(it);
      }
    }
  }
  // Sockets of all pods are set up (and removed) in parallel; wait for them together.
  for (size_t i = 0; i < removals.size(); ++i) {
    if (!WaitForRemoval(removals[i].get())) acks[i] = RemovalPending(acks[i].pod, "not in snapshot; ");
  }
  std::vector<PodAck> out;
  out.reserve(pending.size() + acks.size());
  for (Pending& p : pending) out.push_back(Finish(std::move(p)));
  for (PodAck& ack : acks) out.push_back(std::move(ack));
  return out;
}

std::vector<PodStatus> SubscriptionManager::Impl::ListPods(std::string_view after, size_t limit) const {
  absl::MutexLock lock(&mu_);
  std::vector<PodStatus> out;
  out.reserve(limit != 0 ? std::min(limit, pods_.size()) : pods_.size());
  for (auto it = after.empty() ? pods_.begin() : pods_.upper_bound(after);
       it != pods_.end() && (limit == 0 || out.size() < limit); ++it) {
    const PodEntry& entry = it->second;
    PodStatus status{entry.pod, entry.plan, entry.subscribed, {}};
    for (const auto& cell : entry.workers) status.workers.push_back(cell->Get());
    out.push_back(std::move(status));
  }
  return out;
}

std::optional<PodStatus> SubscriptionManager::Impl::FindPod(std::string_view key) const {
  absl::MutexLock lock(&mu_);
  auto it = pods_.find(key);
  if (it == pods_.end()) return std::nullopt;
  const PodEntry& entry = it->second;
  PodStatus status{entry.pod, entry.plan, entry.subscribed, {}};
  for (const auto& cell : entry.workers) status.workers.push_back(cell->Get());
  return status;
}

ManagerStats SubscriptionManager::Impl::GetStats() const {
  ManagerStats stats;
  absl::MutexLock lock(&mu_);
  stats.pods = pods_.size();
  for (const auto& [key, entry] : pods_) {
    if (!entry.subscribed) continue;
    ++stats.subscribed_pods;
    stats.workers += entry.task_ids.size();
  }
  stats.events_bind_endpoint = io_.bind_endpoint;
  stats.bind_messages = bind_counters_.messages.load(std::memory_order_relaxed);
  stats.bind_unknown_senders = bind_counters_.unknown_senders.load(std::memory_order_relaxed);
  stats.bind_bad_frames = bind_counters_.bad_frames.load(std::memory_order_relaxed);
  stats.removals_pending = removals_pending_.load(std::memory_order_relaxed);
  return stats;
}

SubscriptionManager::SubscriptionManager(IndexProvider* provider, ManagerOptions options)
    : impl_(std::make_unique<Impl>(provider, std::move(options))) {}
SubscriptionManager::~SubscriptionManager() = default;
absl::Status SubscriptionManager::Start() { return impl_->Start(); }
void SubscriptionManager::Stop() { impl_->Stop(); }
PodAck SubscriptionManager::Upsert(const Pod& pod) { return impl_->Upsert(pod); }
PodAck SubscriptionManager::Delete(std::string_view pod_key) { return impl_->Delete(pod_key); }
std::vector<PodAck> SubscriptionManager::ApplySnapshot(const std::vector<Pod>& pods) {
  return impl_->ApplySnapshot(pods);
}
std::vector<PodStatus> SubscriptionManager::ListPods() const { return impl_->ListPods("", 0); }
std::vector<PodStatus> SubscriptionManager::ListPods(std::string_view after, size_t limit) const {
  return impl_->ListPods(after, limit);
}
std::optional<PodStatus> SubscriptionManager::FindPod(std::string_view key) const { return impl_->FindPod(key); }
ManagerStats SubscriptionManager::GetStats() const { return impl_->GetStats(); }

}  // namespace kvindex
