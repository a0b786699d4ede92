#include "tools/sim/sim_engine.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvindex::sim {

absl::StatusOr<std::unique_ptr<SimEngine>> SimEngine::Create(zmq::context_t& context, SimEngineOptions options) {
  absl::StatusOr<std::unique_ptr<Publisher>> publisher = Publisher::Create(context, options.publisher);
  if (!publisher.ok()) return publisher.status();
  return std::unique_ptr<SimEngine>(new SimEngine(std::move(options), *std::move(publisher)));
}

SimEngine::SimEngine(SimEngineOptions options, std::unique_ptr<Publisher> publisher)
    : options_(std::move(options)),
      publisher_(std::move(publisher)),
      events_port_(publisher_->events_port()),
      replay_port_(publisher_->replay_port()),
      workload_(options_.workload),
      cache_(options_.cache),
      salt_(options_.cache.salt) {}

SimEngine::~SimEngine() = default;

absl::Status SimEngine::PublishLocked(EventBatch& batch) {
  batch.ts = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  batch.dp_rank = options_.dp_rank;
  absl::Status status = publisher_->Publish(EncodePayload(batch, options_.layout, options_.hashes));
  next_seq_ = publisher_->next_seq();
  ++counters_.batches;
  counters_.events += batch.events.size();
  if (!status.ok()) ++counters_.publish_errors;
  return status;
}

absl::Status SimEngine::Step(size_t requests) {
  absl::MutexLock lock(&mu_);
  absl::Status first_error;
  EventBatch batch;
  const size_t per_batch = std::max<size_t>(options_.requests_per_batch, 1);
  size_t in_batch = 0;
  for (size_t r = 0; r < requests; ++r) {
    const absl::Span<const uint32_t> prompt = workload_.Next();
    cache_.Serve(prompt, workload_.LastKeys(), &batch.events);
    ++counters_.requests;
    if (++in_batch < per_batch && r + 1 < requests) continue;
    in_batch = 0;
    if (batch.events.empty()) continue;
    if (absl::Status status = PublishLocked(batch); !status.ok() && first_error.ok()) first_error = status;
    batch.events.clear();
  }
  counters_.cache = cache_.counters();
  counters_.publisher = publisher_->counters();
  return first_error;
}

size_t SimEngine::ServeLater(absl::Span<const uint32_t> tokens, absl::Time publish_at) {
  absl::MutexLock lock(&mu_);
  EventBatch batch;
  const size_t cached = cache_.Serve(tokens, &batch.events);
  ++counters_.requests;
  counters_.cache = cache_.counters();
  if (!batch.events.empty()) {
    // Due times only grow for a constant delay; a shorter one waits its turn (order is the engine's).
    if (!held_.empty()) publish_at = std::max(publish_at, held_.back().first);
    held_.emplace_back(publish_at, std::move(batch));
  }
  return cached;
}

absl::Status SimEngine::PublishDue(absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::Status first_error;
  while (!held_.empty() && held_.front().first <= now) {
    if (absl::Status status = PublishLocked(held_.front().second); !status.ok() && first_error.ok()) {
      first_error = status;
    }
    held_.pop_front();
  }
  counters_.publisher = publisher_->counters();
  return first_error;
}

absl::Time SimEngine::NextDue() const {
  absl::ReaderMutexLock lock(&mu_);
  return held_.empty() ? absl::InfiniteFuture() : held_.front().first;
}

size_t SimEngine::CachedBlocks(absl::Span<const uint32_t> tokens) const {
  absl::ReaderMutexLock lock(&mu_);
  return cache_.CachedPrefixBlocks(tokens);
}

absl::Status SimEngine::Restart() {
  absl::MutexLock lock(&mu_);
  ++counters_.restarts;
  salt_ = Mix64(salt_ + 0x9E3779B97F4A7C15ULL);
  cache_.Reset(salt_);
  held_.clear();  // the old incarnation's events die with it
  absl::Status status = publisher_->Restart(options_.rebind_on_restart);
  next_seq_ = publisher_->next_seq();
  if (status.ok() && options_.clear_event_on_restart) {
    EventBatch batch;
    batch.events.push_back(AllBlocksCleared{});
    status = PublishLocked(batch);
  }
  counters_.publisher = publisher_->counters();
  return status;
}

absl::Status SimEngine::ServeReplay() {
  absl::MutexLock lock(&mu_);
  absl::Status status = publisher_->ServeReplay();
  counters_.publisher = publisher_->counters();
  return status;
}

EngineTruth SimEngine::TruthLocked() const {
  EngineTruth t;
  t.pod = pod_key();
  t.ns = options_.ns;
  t.name = options_.pod_name;
  t.ip = options_.ip;
  t.dp_rank = options_.dp_rank;
  t.events_port = events_port_;
  t.replay_port = replay_port_;
  t.topic = options_.publisher.topic;
  t.model = options_.cache.model;
  t.lora_name = options_.cache.lora_name;
  t.block_size = options_.cache.block_size;
  t.layout = std::string(PayloadLayoutName(options_.layout));
  t.hashes = std::string(HashEncodingName(options_.hashes));
  t.last_seq = static_cast<int64_t>(next_seq_) - 1;
  t.restarts = counters_.restarts;
  t.batches = counters_.batches;
  t.blocks = cache_.Snapshot();
  const EngineCacheOptions& o = cache_.options();
  t.offload_chunk_blocks = o.offload_chunk_blocks;
  if (o.hybrid != HybridKind::kNone) {
    t.group1_kind = o.hybrid == HybridKind::kMamba ? kMambaKind : kSlidingWindowKind;
    t.sliding_window = o.hybrid == HybridKind::kMamba ? 0 : o.sliding_window;
    t.group1_keep = static_cast<uint32_t>(cache_.Group1Keep());
  }
  return t;
}

EngineTruth SimEngine::Truth() const {
  absl::ReaderMutexLock lock(&mu_);
  return TruthLocked();
}

EngineTruth SimEngine::Expected(absl::Span<const SamplePrompt> prompts, std::vector<CachedPrefix>* held) const {
  absl::ReaderMutexLock lock(&mu_);
  held->clear();
  for (const SamplePrompt& p : prompts) held->push_back(cache_.CachedPrefixMedia(p.tokens, p.keys));
  return TruthLocked();
}

std::vector<SamplePrompt> SimEngine::SampleConversations(size_t n, Rng& rng) const {
  absl::ReaderMutexLock lock(&mu_);
  return workload_.SampleConversations(n, rng);
}

std::vector<SamplePrompt> SimEngine::SampleShared(Rng& rng) const {
  absl::ReaderMutexLock lock(&mu_);
  return workload_.SampleShared(rng);
}

EngineCounters SimEngine::counters() const {
  absl::ReaderMutexLock lock(&mu_);
  return counters_;
}

}  // namespace kvindex::sim
