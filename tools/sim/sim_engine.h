#pragma once

// SimEngine: one simulated engine process (a pod's dp rank): a Workload feeding
// an EngineCache whose events are encoded in the engine's payload layout and
// published by a Publisher.
//
// Thread safety: Step(), PublishDue(), Restart(), ReplayPollItem() and ServeReplay() touch
// ZeroMQ sockets and must be called from one thread (the one running the
// engine). Truth(), Expected() and SampleConversations() may be called from any
// thread; they see the state between two batches.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "tools/sim/engine_cache.h"
#include "tools/sim/ground_truth.h"
#include "tools/sim/payload_encoder.h"
#include "tools/sim/publisher.h"
#include "tools/sim/workload.h"
#include "zmq.hpp"

namespace kvindex::sim {

struct SimEngineOptions {
  std::string ns = "default";
  std::string pod_name;            // Kubernetes name of the pod
  uint32_t dp_rank = 0;
  std::string ip = "127.0.0.1";    // reported in the ground truth; the publisher binds publisher.host
  PayloadLayout layout = PayloadLayout::kMap;
  HashEncoding hashes = HashEncoding::kInt;
  size_t requests_per_batch = 1;   // prompts whose events share one batch
  bool clear_event_on_restart = false;  // vLLM sends no AllBlocksCleared when it restarts
  bool rebind_on_restart = true;
  WorkloadOptions workload;
  EngineCacheOptions cache;        // cache.salt is replaced on every restart
  PublisherOptions publisher;
};

struct EngineCounters {
  uint64_t requests = 0;
  uint64_t batches = 0;
  uint64_t events = 0;
  uint64_t publish_errors = 0;
  uint64_t restarts = 0;
  CacheCounters cache;  // over every incarnation (restarts included)
  PublisherCounters publisher;
};

class SimEngine {
 public:
  // Binds the sockets. UNAVAILABLE when a port cannot be bound.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SimEngine>> Create(zmq::context_t& context, SimEngineOptions options);
  ~SimEngine();

  // Serves `requests` prompts of the workload, publishing their events,
  // requests_per_batch prompts per batch (a batch without events is not sent).
  // UNAVAILABLE when ZeroMQ failed (the batch kept its seq and stays replayable).
  [[nodiscard]] absl::Status Step(size_t requests) ABSL_LOCKS_EXCLUDED(mu_);
  // Serves one prompt chosen by someone else (a gateway) now, its events held
  // until PublishDue reaches `publish_at` (event delivery delayed, as under
  // load). Returns the prompt's leading full blocks that were already cached.
  size_t ServeLater(absl::Span<const uint32_t> tokens, absl::Time publish_at) ABSL_LOCKS_EXCLUDED(mu_);
  // Publishes, in order, the batches ServeLater held that are due at `now`.
  [[nodiscard]] absl::Status PublishDue(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // When the next held batch falls due; InfiniteFuture when none is held.
  absl::Time NextDue() const ABSL_LOCKS_EXCLUDED(mu_);
  // Leading full blocks of `tokens` this engine holds now, in any tier.
  size_t CachedBlocks(absl::Span<const uint32_t> tokens) const ABSL_LOCKS_EXCLUDED(mu_);

  // Engine restart: the cache is emptied and its hash salt changes (vLLM's
  // NONE_HASH), seq restarts at 0, the replay buffer is emptied and the
  // sockets are bound again when rebind_on_restart; AllBlocksCleared is then
  // published as batch 0 when clear_event_on_restart.
  [[nodiscard]] absl::Status Restart() ABSL_LOCKS_EXCLUDED(mu_);

  // Replay service; see Publisher.
  zmq::pollitem_t ReplayPollItem() { return publisher_->ReplayPollItem(); }
  [[nodiscard]] absl::Status ServeReplay() ABSL_LOCKS_EXCLUDED(mu_);

  // What the engine holds now, and the identity to find it by in kvindex.
  EngineTruth Truth() const ABSL_LOCKS_EXCLUDED(mu_);

  // Truth() plus, for each prompt, the leading blocks this engine holds (and on
  // which tiers), taken at the same instant.
  EngineTruth Expected(absl::Span<const SamplePrompt> prompts, std::vector<CachedPrefix>* held) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Live conversations of the workload extended by a fresh turn; see Workload.
  std::vector<SamplePrompt> SampleConversations(size_t n, Rng& rng) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<SamplePrompt> SampleShared(Rng& rng) const ABSL_LOCKS_EXCLUDED(mu_);

  EngineCounters counters() const ABSL_LOCKS_EXCLUDED(mu_);

  const SimEngineOptions& options() const { return options_; }
  uint32_t events_port() const { return events_port_; }
  std::optional<uint32_t> replay_port() const { return replay_port_; }
  // "namespace/name".
  std::string pod_key() const { return options_.ns + "/" + options_.pod_name; }

 private:
  SimEngine(SimEngineOptions options, std::unique_ptr<Publisher> publisher);
  [[nodiscard]] absl::Status PublishLocked(EventBatch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  EngineTruth TruthLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const SimEngineOptions options_;
  const std::unique_ptr<Publisher> publisher_;  // engine thread only
  const uint32_t events_port_;
  const std::optional<uint32_t> replay_port_;

  mutable absl::Mutex mu_;
  Workload workload_ ABSL_GUARDED_BY(mu_);
  EngineCache cache_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t salt_ ABSL_GUARDED_BY(mu_);
  EngineCounters counters_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<absl::Time, EventBatch>> held_ ABSL_GUARDED_BY(mu_);  // ServeLater's, by due time
};

}  // namespace kvindex::sim
