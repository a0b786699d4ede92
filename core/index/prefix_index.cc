#include "core/index/prefix_index.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"

#include "core/index/internal/block_table.h"
#include "core/index/internal/context_registry.h"
#include "core/index/internal/matcher.h"
#include "core/index/internal/medium_table.h"
#include "core/index/internal/prompt_hashes.h"
#include "core/index/internal/speculative_table.h"
#include "core/index/internal/worker_blocks.h"
#include "core/index/internal/worker_directory.h"

namespace kvindex {

// PrefixIndex is a front over the parts in internal/, each with one
// responsibility and one kind of lock (their order: internal/lock_order.h):
//
//   WorkerDirectory  which workers exist, by key, id and pod
//   WorkerBlocks     one worker's engine blocks, aliases, accounting and cap
//   ContextRegistry  the block sizes in use per (model, LoRA)
//   BlockTable       index hash -> holders, in lock shards; carries out the
//                    workers' holder updates
//   Matcher          Match: walking, scoring, naming the workers
//   MediumTable      medium names <-> bits
//   SpeculativeTable routing hints: speculative entries until confirmed,
//                    dropped or expired (written by the workers)
//
// The front routes each call to them, and enforces the global cap, the one
// rule that spans workers.
class PrefixIndex::Impl {
 public:
  explicit Impl(IndexOptions options)
      : options(options),
        table(options.shards),
        speculative(options.speculative),
        matcher(table, workers, contexts, media, &speculative) {}

  // While the index holds more than max_entries entries, evicts from the
  // worker holding the most (leaves first within it), so one flooding
  // engine cannot push out everyone else.
  void EnforceGlobalCap() {
    if (options.max_entries == 0) return;
    constexpr uint64_t kBatch = 64;  // evictions per turn of the victim's lock
    while (counters.entries.load(std::memory_order_relaxed) > options.max_entries) {
      std::shared_ptr<WorkerBlocks> victim = workers.Largest();
      if (victim == nullptr) return;
      victim->EvictOverCap(options.max_entries, kBatch);
    }
  }

  WorkerBlocks::Shared SharedParts() { return {table, contexts, media, counters, &speculative}; }

  const IndexOptions options;
  MediumTable media;
  BlockTable table;
  ContextRegistry contexts;
  IndexCounters counters;
  SpeculativeTable speculative;
  WorkerDirectory workers;  // after what the workers refer to: destroyed before it
  Matcher matcher;
};

PrefixIndex::PrefixIndex(IndexOptions options) : impl_(std::make_unique<Impl>(options)) {}
PrefixIndex::~PrefixIndex() = default;

ApplyResult PrefixIndex::Apply(const WorkerKey& worker, const WorkerContext& context, const EventBatch& batch,
                               const std::optional<BatchCursor>& cursor) {
  std::shared_ptr<WorkerBlocks> w = impl_->workers.FindOrCreate(
      worker, [&](uint32_t id) { return std::make_shared<WorkerBlocks>(id, worker, impl_->SharedParts()); });
  const ApplyResult result = w->Apply(context, batch, impl_->options.max_blocks_per_worker, cursor);
  if (!result.worker_removed) impl_->EnforceGlobalCap();
  return result;
}

void PrefixIndex::ClearWorker(const WorkerKey& worker) {
  if (std::shared_ptr<WorkerBlocks> w = impl_->workers.Find(worker)) w->Clear();
}

void PrefixIndex::RemoveWorker(const WorkerKey& worker) {
  if (std::shared_ptr<WorkerBlocks> w = impl_->workers.Remove(worker)) w->Remove();
}

void PrefixIndex::RemovePod(std::string_view pod) {
  for (const WorkerKey& key : impl_->workers.KeysOfPod(pod)) RemoveWorker(key);
}

absl::StatusOr<MatchResult> PrefixIndex::Match(const MatchQuery& query) const { return impl_->matcher.Match(query); }

absl::StatusOr<RoutingResult> PrefixIndex::RecordRouting(const RoutingHint& hint) {
  if (hint.model.empty()) return absl::InvalidArgumentError("model is required");
  if (hint.token_ids.empty() == hint.block_hashes.empty()) {
    return absl::InvalidArgumentError("exactly one of token_ids and block_hashes must be given");
  }
  std::shared_ptr<WorkerBlocks> w = impl_->workers.FindOrCreate(
      hint.worker, [&](uint32_t id) { return std::make_shared<WorkerBlocks>(id, hint.worker, impl_->SharedParts()); });
  SpeculativeTable& speculative = impl_->speculative;
  uint32_t block_size = w->block_size();
  if (block_size == 0) {
    const std::vector<uint32_t> known = impl_->contexts.BlockSizes(hint.model, hint.lora_name);
    block_size = known.empty() ? speculative.options().default_block_size : known.front();
  }
  if (block_size == 0) return absl::InvalidArgumentError("no block size: the default block size is 0");
  const std::vector<uint64_t> xs =
      hint.token_ids.empty()
          ? std::vector<uint64_t>(hint.block_hashes.begin(), hint.block_hashes.end())
          : PromptHashes(hint.model, hint.lora_name, block_size, hint.token_ids, hint.cache_salt, hint.mm_inputs);
  RoutingResult result;
  result.ttl = hint.ttl.value_or(speculative.TtlOf(w->id()));
  const absl::Time deadline =
      result.ttl == absl::InfiniteDuration() ? absl::InfiniteFuture() : speculative.Now() + result.ttl;
  result.blocks = w->Speculate(
      hint.model, ContextKey{std::string(hint.model), std::string(hint.lora_name), block_size}, xs, deadline);
  return result;
}

SpeculativeStats PrefixIndex::GetSpeculativeStats() const {
  impl_->speculative.PurgeExpired(impl_->speculative.Now());
  return impl_->speculative.Stats();
}

std::optional<WorkerStats> PrefixIndex::GetWorkerStats(const WorkerKey& worker) const {
  std::shared_ptr<WorkerBlocks> w = impl_->workers.Find(worker);
  if (w == nullptr) return std::nullopt;
  impl_->speculative.PurgeExpired(impl_->speculative.Now());
  return w->Stats();
}

std::vector<WorkerStats> PrefixIndex::ListWorkers() const {
  impl_->speculative.PurgeExpired(impl_->speculative.Now());
  std::vector<WorkerStats> out;
  for (const auto& w : impl_->workers.All()) out.push_back(w->Stats());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.worker < b.worker; });
  return out;
}

std::vector<uint64_t> PrefixIndex::EngineHashes(const WorkerKey& worker) const {
  std::shared_ptr<WorkerBlocks> w = impl_->workers.Find(worker);
  return w == nullptr ? std::vector<uint64_t>{} : w->EngineHashes();
}

IndexStats PrefixIndex::Stats() const {
  IndexStats s;
  const std::vector<std::shared_ptr<WorkerBlocks>> workers = impl_->workers.All();
  s.workers = workers.size();
  for (const auto& w : workers) s.memory_bytes += w->MemoryBytes();
  const BlockTable::Usage table = impl_->table.Measure();
  s.memory_bytes += table.memory_bytes;
  s.blocks = table.blocks;
  s.entries = impl_->counters.entries.load(std::memory_order_relaxed);
  s.evictions = impl_->counters.evictions.load(std::memory_order_relaxed);
  s.unresolved_parents = impl_->counters.unresolved_parents.load(std::memory_order_relaxed);
  return s;
}

std::vector<WorkerKey> PrefixIndex::WorkerKeys() const {
  std::vector<WorkerKey> out;
  for (const auto& w : impl_->workers.All()) out.push_back(w->key());
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<WorkerSnapshot> PrefixIndex::ExportWorker(const WorkerKey& worker, ExportPause* pause) const {
  std::shared_ptr<WorkerBlocks> w = impl_->workers.Find(worker);
  if (w == nullptr) return std::nullopt;
  return w->Export(pause);
}

absl::Status PrefixIndex::ImportWorker(const WorkerSnapshot& snapshot) {
  if (absl::Status valid = WorkerBlocks::Validate(snapshot); !valid.ok()) return valid;
  bool created = false;
  std::shared_ptr<WorkerBlocks> w = impl_->workers.FindOrCreate(snapshot.worker, [&](uint32_t id) {
    created = true;
    return std::make_shared<WorkerBlocks>(id, snapshot.worker, impl_->SharedParts());
  });
  if (!created) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", WorkerKeyString(snapshot.worker), " already exists"));
  }
  w->Import(snapshot, impl_->options.max_blocks_per_worker);
  impl_->EnforceGlobalCap();
  return absl::OkStatus();
}

}  // namespace kvindex
