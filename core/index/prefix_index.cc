#include "core/index/prefix_index.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/index/block_hash.h"
#include "core/index/extra_keys_hash.h"
#include "core/index/internal/engine_map.h"
#include "core/index/internal/holder_table.h"
#include "core/index/internal/medium_table.h"

namespace kvindex {
namespace {

// Data structure and invariants
// -----------------------------
// The block table maps an index hash X to its holders (HolderTable): one
// Holder per worker holding X, sorted by worker id, carrying the union of the
// media the worker holds X on and `refs`, the number of the worker's engine
// blocks that map to X (usually 1; more when engine hashes differ for
// identical token chains, e.g. multimodal inputs or cache salts). It is split
// into lock shards by X.
//
// Each worker keeps its engine blocks in an EngineMap (engine hash -> X and
// media, second-chance eviction). For an X with refs > 1 the worker also keeps
// per-medium counts in `aliases`, so that the holder's media stay the exact
// union when one alias goes away.
//
// Lock order: workers_mu_ -> Worker::mu -> (contexts_mu_ | Shard::mu). Match
// takes shard locks as reader, one at a time, then workers_mu_ as reader.

// Blocks between a slot's prefetch and its use when applying an event: enough
// to overlap ~8 cache misses, few enough that the lines are still in L1.
constexpr size_t kPrefetchAhead = 8;

// Most holder updates a worker queues before carrying them out (see FlushHolders).
constexpr size_t kMaxPendingHolderOps = 256;

struct Shard {
  mutable absl::Mutex mu;
  HolderTable blocks ABSL_GUARDED_BY(mu);
};

using AliasCounts = std::array<uint16_t, kMaxMedia>;

bool SameHolders(absl::Span<const Holder> a, const std::vector<Holder>& b) {
  if (a.size() != b.size()) return false;
  if (a.size() == 1) return std::bit_cast<uint64_t>(a[0]) == std::bit_cast<uint64_t>(b[0]);  // skip the call
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(Holder)) == 0;
}

MediumMask MaskOf(const AliasCounts& counts) {
  MediumMask m = 0;
  for (int b = 0; b < kMaxMedia; ++b) {
    if (counts[b] != 0) m |= MediumMask(1u << b);
  }
  return m;
}

// A change to one worker's holder of block X, queued while the worker's
// events are applied and carried out by FlushHolders, shard by shard.
struct HolderOp {
  enum Kind : uint8_t {
    kAddRef,       // a new engine block maps to X on medium `a`
    kChangeMedia,  // an engine block mapping to X changed media from `a` to `b`
    kDropRef,      // an engine block mapping to X with media `a` is gone
    kClear,        // the worker holds X no more (all its blocks are cleared)
  };
  uint64_t x;
  Kind kind;
  MediumMask a = 0;
  MediumMask b = 0;
};

// (model, lora, block size): one chain-hash namespace.
using ContextKey = std::tuple<std::string, std::string, uint32_t>;

struct Worker {
  Worker(uint32_t id, WorkerKey key) : id(id), key(std::move(key)) {}

  const uint32_t id;
  const WorkerKey key;

  absl::Mutex mu;
  bool removed ABSL_GUARDED_BY(mu) = false;
  std::string model ABSL_GUARDED_BY(mu);
  std::string default_lora ABSL_GUARDED_BY(mu);
  EngineMap blocks ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<uint64_t, AliasCounts> aliases ABSL_GUARDED_BY(mu);
  // Holder updates not yet carried out (FlushHolders), and its scratch.
  std::vector<HolderOp> pending ABSL_GUARDED_BY(mu);
  std::vector<HolderOp> by_shard ABSL_GUARDED_BY(mu);
  std::vector<uint32_t> shard_ends ABSL_GUARDED_BY(mu);
  std::array<uint64_t, kMaxMedia> blocks_by_medium ABSL_GUARDED_BY(mu) = {};
  absl::flat_hash_set<ContextKey> contexts ABSL_GUARDED_BY(mu);
  // Seed of the context last stored into (cache; ContextSeed allocates).
  ContextKey last_context ABSL_GUARDED_BY(mu);
  uint64_t last_seed ABSL_GUARDED_BY(mu) = 0;
  uint64_t evictions ABSL_GUARDED_BY(mu) = 0;
  uint64_t unresolved_parents ABSL_GUARDED_BY(mu) = 0;
  double last_event_ts ABSL_GUARDED_BY(mu) = 0;

  // Read without mu by Match and the global evictor.
  std::atomic<uint32_t> block_size{0};
  std::atomic<uint64_t> live{0};  // blocks.size() as of the last mutation (see Publish)
};

}  // namespace

class PrefixIndex::Impl {
 public:
  explicit Impl(IndexOptions options)
      : options_(options), shards_(std::bit_ceil(std::max<size_t>(1, options.shards))) {
    shard_shift_ = 64 - std::countr_zero(shards_.size());
  }

  ApplyResult Apply(const WorkerKey& key, const WorkerContext& context, const EventBatch& batch) {
    ApplyResult result;
    std::shared_ptr<Worker> w = GetOrCreateWorker(key);
    {
      absl::MutexLock lock(&w->mu);
      if (w->removed) {
        result.worker_removed = true;
        return result;
      }
      w->model = context.model;
      w->default_lora = context.default_lora;
      for (const Event& event : batch.events) {
        if (const auto* stored = std::get_if<BlockStored>(&event)) {
          ApplyStored(*w, *stored, result);
        } else if (const auto* removed = std::get_if<BlockRemoved>(&event)) {
          ApplyRemoved(*w, *removed, result);
        } else {
          ClearLocked(*w);
          ++result.clears;
        }
      }
      w->last_event_ts = batch.ts;
      if (options_.max_blocks_per_worker != 0) {
        while (w->blocks.size() > options_.max_blocks_per_worker) {
          EvictOne(*w);
          ++result.evictions;
        }
      }
      w->unresolved_parents += result.unresolved_parents;
      unresolved_parents_.fetch_add(result.unresolved_parents, std::memory_order_relaxed);
      Publish(*w);
    }
    EnforceGlobalCap();
    return result;
  }

  void ClearWorker(const WorkerKey& key) {
    std::shared_ptr<Worker> w = FindWorker(key);
    if (w == nullptr) return;
    absl::MutexLock lock(&w->mu);
    ClearLocked(*w);
    Publish(*w);
  }

  void RemoveWorker(const WorkerKey& key) {
    std::shared_ptr<Worker> w;
    {
      absl::MutexLock lock(&workers_mu_);
      auto it = by_key_.find(key);
      if (it == by_key_.end()) return;
      w = std::move(it->second);
      by_key_.erase(it);
      by_id_.erase(w->id);
      auto pod = by_pod_.find(key.pod);
      if (pod != by_pod_.end()) {
        std::erase(pod->second, w->id);
        if (pod->second.empty()) by_pod_.erase(pod);
      }
    }
    absl::MutexLock lock(&w->mu);
    w->removed = true;
    ClearLocked(*w);
    Publish(*w);
    absl::MutexLock ctx_lock(&contexts_mu_);
    for (const ContextKey& c : w->contexts) ReleaseContextLocked(c);
    w->contexts.clear();
  }

  void RemovePod(std::string_view pod) {
    std::vector<WorkerKey> keys;
    {
      absl::ReaderMutexLock lock(&workers_mu_);
      auto it = by_pod_.find(absl::string_view(pod.data(), pod.size()));
      if (it == by_pod_.end()) return;
      for (uint32_t id : it->second) keys.push_back(by_id_.at(id)->key);
    }
    for (const WorkerKey& k : keys) RemoveWorker(k);
  }

  absl::StatusOr<MatchResult> Match(const MatchQuery& q) const {
    if (q.model.empty()) return absl::InvalidArgumentError("model is required");
    if (q.token_ids.empty() == q.block_hashes.empty()) {
      return absl::InvalidArgumentError("exactly one of token_ids and block_hashes must be given");
    }
    std::vector<uint32_t> candidates;
    if (!q.pods.empty()) {
      absl::ReaderMutexLock lock(&workers_mu_);
      for (const std::string& pod : q.pods) {
        auto it = by_pod_.find(pod);
        if (it != by_pod_.end()) candidates.insert(candidates.end(), it->second.begin(), it->second.end());
      }
    }
    if (!q.pods.empty()) {
      if (candidates.empty()) return Finish(q, {});
      std::sort(candidates.begin(), candidates.end());
    }
    const MaskScores scores = ScoreMasks(q.medium_weights);

    std::vector<RawMatch> raw;
    if (!q.token_ids.empty()) {
      const bool keyed = !q.cache_salt.empty() || !q.mm_inputs.empty();
      ExtraKeysHasher keys;
      for (uint32_t bs : BlockSizes(q.model, q.lora_name)) {
        const uint64_t seed = ContextSeed(q.model, q.lora_name, bs);
        const size_t blocks = q.token_ids.size() / bs;
        uint64_t parent = seed;
        Walk(blocks,
             [&](size_t i) {
               parent = HashBlock(parent, q.token_ids.subspan(i * bs, bs));
               if (keyed) {
                 keys.Clear();
                 AddQueryExtraKeys(q.mm_inputs, q.cache_salt, uint64_t{i} * bs, bs, keys);
                 parent = keys.Hash(parent);
               }
               return parent;
             },
             candidates, scores, bs, raw);
      }
    } else {
      Walk(q.block_hashes.size(), [&](size_t i) { return q.block_hashes[i]; }, candidates, scores, 0, raw);
    }
    return Finish(q, std::move(raw));
  }

  std::optional<WorkerStats> GetWorkerStats(const WorkerKey& key) const {
    std::shared_ptr<Worker> w = FindWorker(key);
    if (w == nullptr) return std::nullopt;
    return StatsOf(*w);
  }

  std::vector<WorkerStats> ListWorkers() const {
    std::vector<std::shared_ptr<Worker>> workers;
    {
      absl::ReaderMutexLock lock(&workers_mu_);
      for (const auto& [key, w] : by_key_) workers.push_back(w);
    }
    std::vector<WorkerStats> out;
    out.reserve(workers.size());
    for (const auto& w : workers) out.push_back(StatsOf(*w));
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.worker < b.worker; });
    return out;
  }

  std::vector<uint64_t> EngineHashes(const WorkerKey& key) const {
    std::vector<uint64_t> out;
    std::shared_ptr<Worker> w = FindWorker(key);
    if (w == nullptr) return out;
    absl::MutexLock lock(&w->mu);
    out.reserve(w->blocks.size());
    w->blocks.ForEach([&](const EngineMap::Block& b) { out.push_back(b.engine); });
    return out;
  }

  IndexStats Stats() const {
    IndexStats s;
    std::vector<std::shared_ptr<Worker>> workers;
    {
      absl::ReaderMutexLock lock(&workers_mu_);
      s.workers = by_key_.size();
      for (const auto& [key, w] : by_key_) workers.push_back(w);
    }
    uint64_t bytes = 0;
    for (const auto& w : workers) {
      absl::MutexLock lock(&w->mu);
      bytes += sizeof(Worker) + w->blocks.MemoryBytes() +
               w->aliases.capacity() * (sizeof(std::pair<uint64_t, AliasCounts>) + 1) +
               (w->pending.capacity() + w->by_shard.capacity()) * sizeof(HolderOp) +
               w->shard_ends.capacity() * sizeof(uint32_t);
    }
    for (const Shard& shard : shards_) {
      absl::ReaderMutexLock lock(&shard.mu);
      bytes += sizeof(Shard) + shard.blocks.MemoryBytes();
      s.blocks += shard.blocks.size();
    }
    s.memory_bytes = bytes;
    s.entries = entries_.load(std::memory_order_relaxed);
    s.evictions = evictions_.load(std::memory_order_relaxed);
    s.unresolved_parents = unresolved_parents_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  // A worker's answer before its key and block size are looked up.
  struct RawMatch {
    uint32_t worker;
    uint32_t blocks;
    uint32_t block_size;  // 0: the worker's own (hash queries)
    std::array<uint32_t, kMaxMedia> by_medium;
    double score;
    MediumMask last_mask;  // media of the last block credited
  };

  // ---- Directory ----

  std::shared_ptr<Worker> FindWorker(const WorkerKey& key) const {
    absl::ReaderMutexLock lock(&workers_mu_);
    auto it = by_key_.find(key);
    return it == by_key_.end() ? nullptr : it->second;
  }

  std::shared_ptr<Worker> GetOrCreateWorker(const WorkerKey& key) {
    if (auto w = FindWorker(key)) return w;
    absl::MutexLock lock(&workers_mu_);
    auto& slot = by_key_[key];
    if (slot == nullptr) {
      slot = std::make_shared<Worker>(next_id_++, key);
      by_id_[slot->id] = slot;
      by_pod_[key.pod].push_back(slot->id);
    }
    return slot;
  }

  // ---- Contexts: which block sizes exist for (model, lora) ----

  void UseContext(Worker& w, const ContextKey& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    if (!w.contexts.insert(c).second) return;
    absl::MutexLock lock(&contexts_mu_);
    ++contexts_[{std::get<0>(c), std::get<1>(c)}][std::get<2>(c)];
  }

  void ReleaseContextLocked(const ContextKey& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(contexts_mu_) {
    auto it = contexts_.find({std::get<0>(c), std::get<1>(c)});
    if (it == contexts_.end()) return;
    auto bs = it->second.find(std::get<2>(c));
    if (bs != it->second.end() && --bs->second == 0) it->second.erase(bs);
    if (it->second.empty()) contexts_.erase(it);
  }

  std::vector<uint32_t> BlockSizes(std::string_view model, std::string_view lora) const {
    std::vector<uint32_t> out;
    absl::ReaderMutexLock lock(&contexts_mu_);
    auto it = contexts_.find(std::make_pair(std::string(model), std::string(lora)));
    if (it != contexts_.end()) {
      for (const auto& [bs, users] : it->second) out.push_back(bs);
    }
    return out;
  }

  // ---- Block table ----

  size_t ShardIndex(uint64_t x) const { return (x >> shard_shift_) & (shards_.size() - 1); }
  Shard& ShardOf(uint64_t x) { return shards_[ShardIndex(x)]; }
  const Shard& ShardOf(uint64_t x) const { return shards_[ShardIndex(x)]; }

  // Starts loading X's slot in its shard, without the shard's lock (see BucketTable::Prefetch).
  void PrefetchHolder(uint64_t x) const ABSL_NO_THREAD_SAFETY_ANALYSIS { ShardOf(x).blocks.Prefetch(x); }

  // The holder updates that follow from changes to w's engine blocks (see HolderOp).
  void AddRef(Worker& w, uint64_t x, MediumMask m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    Queue(w, {x, HolderOp::kAddRef, m});
  }
  void ChangeMedia(Worker& w, uint64_t x, MediumMask before, MediumMask after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    Queue(w, {x, HolderOp::kChangeMedia, before, after});
  }
  void DropRef(Worker& w, uint64_t x, MediumMask media) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    Queue(w, {x, HolderOp::kDropRef, media});
  }
  // Queues a holder update; a full queue is carried out at once, so a worker's
  // queue never holds more than kMaxPendingHolderOps.
  void Queue(Worker& w, const HolderOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    w.pending.push_back(op);
    if (w.pending.size() == kMaxPendingHolderOps) FlushHolders(w);
  }

  // Carries out w's queued holder updates: grouped by shard (a stable counting
  // sort, so each block's updates keep their order), one lock per shard
  // touched, each slot prefetched kPrefetchAhead updates ahead. Queuing saves
  // locks and lets the misses of a batch overlap; Match sees a worker's
  // batch shard by shard, as it always did block by block.
  void FlushHolders(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    if (w.pending.empty()) return;
    std::vector<uint32_t>& ends = w.shard_ends;
    ends.assign(shards_.size(), 0);
    for (const HolderOp& op : w.pending) ++ends[ShardIndex(op.x)];
    for (size_t i = 1; i < ends.size(); ++i) ends[i] += ends[i - 1];
    std::vector<HolderOp>& sorted = w.by_shard;
    sorted.resize(w.pending.size());
    for (size_t i = w.pending.size(); i-- > 0;) sorted[--ends[ShardIndex(w.pending[i].x)]] = w.pending[i];
    const size_t n = sorted.size();
    for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) PrefetchHolder(sorted[i].x);
    for (size_t i = 0; i < n;) {
      Shard& shard = ShardOf(sorted[i].x);
      absl::MutexLock lock(&shard.mu);
      do {
        if (i + kPrefetchAhead < n) PrefetchHolder(sorted[i + kPrefetchAhead].x);
        ApplyHolderOp(w, shard, sorted[i]);
      } while (++i < n && &ShardOf(sorted[i].x) == &shard);
    }
    w.pending.clear();
  }

  // The callbacks given to HolderTable::Update run inside Update, on this
  // thread, while w.mu and shard.mu are held; the analysis checks each lambda
  // as a function of its own and cannot see that, hence
  // ABSL_NO_THREAD_SAFETY_ANALYSIS on them (they touch only h and w.aliases).
  void ApplyHolderOp(Worker& w, Shard& shard, const HolderOp& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu, shard.mu) {
    const uint64_t x = op.x;
    switch (op.kind) {
      case HolderOp::kAddRef:
        shard.blocks.Update(x, w.id, /*create=*/true, [&](Holder& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          if (h.refs == std::numeric_limits<uint16_t>::max()) return;  // absurd aliasing: keep the holder as is
          if (h.refs == 1) {
            AliasCounts counts{};
            for (int b = 0; b < kMaxMedia; ++b) counts[b] = (h.media >> b) & 1;
            w.aliases[x] = counts;
          }
          if (h.refs >= 1) ++w.aliases[x][std::countr_zero(op.a)];
          ++h.refs;
          h.media |= op.a;
        });
        return;
      case HolderOp::kChangeMedia:
        shard.blocks.Update(x, w.id, /*create=*/false, [&](Holder& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          auto alias = w.aliases.find(x);
          if (alias == w.aliases.end()) {
            h.media = op.b;
            return;
          }
          for (int b = 0; b < kMaxMedia; ++b) alias->second[b] += ((op.b >> b) & 1) - ((op.a >> b) & 1);
          h.media = MaskOf(alias->second);
        });
        return;
      case HolderOp::kDropRef:
        shard.blocks.Update(x, w.id, /*create=*/false, [&](Holder& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          --h.refs;
          auto alias = w.aliases.find(x);
          if (alias == w.aliases.end()) return;
          for (int b = 0; b < kMaxMedia; ++b) alias->second[b] -= (op.a >> b) & 1;
          h.media = MaskOf(alias->second);
          if (h.refs <= 1) w.aliases.erase(alias);
        });
        return;
      case HolderOp::kClear:
        shard.blocks.Update(x, w.id, /*create=*/false, [](Holder& h) { h.refs = 0; });
        return;
    }
  }

  // ---- Per-worker engine blocks ----

  void CountMedia(Worker& w, MediumMask media, int delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    for (int b = 0; b < kMaxMedia; ++b) {
      if (media >> b & 1) w.blocks_by_medium[b] += delta;
    }
  }

  // Accounts for engine block `b`, already gone from w.blocks.
  void Forget(Worker& w, const EngineMap::Block& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    DropRef(w, b.index, b.media);
    CountMedia(w, b.media, -1);
  }

  // Engine block `engine` of `w` is (now also) on medium `m` and maps to X.
  // Returns true when something changed in the index.
  bool Store(Worker& w, uint64_t engine, uint64_t x, MediumMask m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    const std::optional<EngineMap::Block> old = w.blocks.Store(engine, x, m);  // marks it recently stored
    if (old && old->index == x) {
      if (old->media & m) return false;
      CountMedia(w, m, +1);
      ChangeMedia(w, x, old->media, old->media | m);
      return true;
    }
    if (old) Forget(w, *old);  // the engine reused a hash for other content: the new content wins
    CountMedia(w, m, +1);
    AddRef(w, x, m);
    return true;
  }

  // Seed of the worker's context (its model, `lora`, `block_size`); registers
  // the context so Match knows to try this block size.
  uint64_t ContextSeedFor(Worker& w, const std::string& lora, uint32_t block_size)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    const auto& [model, last_lora, last_bs] = w.last_context;
    if (w.last_seed == 0 || last_bs != block_size || last_lora != lora || model != w.model) {
      w.last_context = ContextKey{w.model, lora, block_size};
      w.last_seed = ContextSeed(w.model, lora, block_size);
      UseContext(w, w.last_context);
    }
    return w.last_seed;
  }

  void ApplyStored(Worker& w, const BlockStored& ev, ApplyResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    const size_t n = ev.block_hashes.size();
    if (n == 0) return;
    if (!ev.HasTokens()) return ApplyOffloaded(w, ev, result);
    std::optional<uint64_t> parent;
    if (ev.block_size != 0 && ev.token_ids.size() == size_t{ev.block_size} * n) {  // else: hand-built batch
      if (!ev.parent_block_hash) {
        parent = 0;  // the context seed, below
      } else if (auto p = w.blocks.Find(*ev.parent_block_hash)) {
        parent = p->index;
      }
    }
    if (!parent) {
      ++result.unresolved_parents;
      result.blocks_unindexed += n;
      return;
    }
    const std::string& lora = ev.lora_name ? *ev.lora_name : w.default_lora;
    const uint64_t seed = ContextSeedFor(w, lora, ev.block_size);
    uint64_t x = ev.parent_block_hash ? *parent : seed;
    // Extra keys per block, and SGLang's salt on a prompt's first block (extra_keys_hash.h).
    const bool salted = ev.cache_salt.has_value() && !ev.cache_salt->empty() && !ev.parent_block_hash;
    const bool keyed = !ev.extra_keys.empty() || salted;
    ExtraKeysHasher keys;
    w.block_size.store(ev.block_size, std::memory_order_relaxed);
    const MediumMask m = media_.BitOf(ev.medium);
    const absl::Span<const uint32_t> tokens(ev.token_ids);
    // Each store kPrefetchAhead blocks behind the prefetch of its engine-map
    // slot (its block-table slot is prefetched when the holders are flushed).
    for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) w.blocks.Prefetch(ev.block_hashes[i]);
    for (size_t i = 0; i < n; ++i) {
      if (i + kPrefetchAhead < n) w.blocks.Prefetch(ev.block_hashes[i + kPrefetchAhead]);
      x = HashBlock(x, tokens.subspan(i * ev.block_size, ev.block_size));
      if (keyed) {
        keys.Clear();
        if (i < ev.extra_keys.size()) AddEventExtraKeys(ev.extra_keys[i], lora, keys);
        if (i == 0 && salted) keys.AddStr(*ev.cache_salt);
        x = keys.Hash(x);
      }
      if (Store(w, ev.block_hashes[i], x, m)) ++result.blocks_stored;
    }
  }

  // An offloaded chunk (no tokens) names a block the worker stored before
  // (its GPU copy): that block is now also on the event's medium. A hash the
  // worker does not hold cannot be indexed (nothing says what it contains).
  void ApplyOffloaded(Worker& w, const BlockStored& ev, ApplyResult& result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    const MediumMask m = media_.BitOf(ev.medium);
    for (uint64_t engine : ev.block_hashes) {
      const std::optional<EngineMap::Block> b = w.blocks.Find(engine);
      if (!b) {
        ++result.unknown_chunks;
        continue;
      }
      if (Store(w, engine, b->index, m)) ++result.blocks_stored;
    }
  }

  void ApplyRemoved(Worker& w, const BlockRemoved& ev, ApplyResult& result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    const MediumMask m = media_.BitOf(ev.medium);
    // Each removal kPrefetchAhead blocks behind the prefetch of its engine-map slot.
    const absl::Span<const uint64_t> engines(ev.block_hashes);
    const size_t n = engines.size();
    for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) w.blocks.Prefetch(engines[i]);
    for (size_t i = 0; i < n; ++i) {
      if (i + kPrefetchAhead < n) w.blocks.Prefetch(engines[i + kPrefetchAhead]);
      const std::optional<EngineMap::Block> b = w.blocks.Remove(engines[i], m);
      if (!b) {
        ++result.unknown_removals;
        continue;
      }
      ++result.blocks_removed;
      if (b->media == m) {
        Forget(w, *b);
      } else {
        CountMedia(w, m, -1);
        ChangeMedia(w, b->index, b->media, static_cast<MediumMask>(b->media & ~m));
      }
    }
  }

  void ClearLocked(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    // ForEach runs the callback here, under w.mu (see ApplyHolderOp).
    w.blocks.ForEach([&](const EngineMap::Block& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      Queue(w, {b.index, HolderOp::kClear});
    });
    FlushHolders(w);  // before the aliases go: updates queued before the clear use them
    w.blocks.Clear();
    w.aliases = {};
    w.blocks_by_medium = {};
  }

  // Ends a mutation of `w`: carries out its queued holder updates, then
  // publishes its size to `live` and its change to entries_ (once per
  // mutation, not per block: atomics are costly on the ingestion path).
  void Publish(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    FlushHolders(w);
    const uint64_t now = w.blocks.size();
    const uint64_t before = w.live.exchange(now, std::memory_order_relaxed);
    if (now != before) entries_.fetch_add(now - before, std::memory_order_relaxed);  // wraps when shrinking
  }

  void EvictOne(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w.mu) {
    Forget(w, w.blocks.EvictOne());
    ++w.evictions;
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }

  // While over max_entries, evicts from the worker holding the most entries
  // (second chance within it), so one flooding engine cannot push out everyone else.
  void EnforceGlobalCap() {
    if (options_.max_entries == 0) return;
    constexpr uint64_t kBatch = 64;
    while (entries_.load(std::memory_order_relaxed) > options_.max_entries) {
      std::shared_ptr<Worker> victim;
      {
        uint64_t most = 0;
        absl::ReaderMutexLock lock(&workers_mu_);
        for (const auto& [id, w] : by_id_) {
          const uint64_t live = w->live.load(std::memory_order_relaxed);
          if (live > most) {
            victim = w;
            most = live;
          }
        }
      }
      if (victim == nullptr) return;
      absl::MutexLock lock(&victim->mu);
      const uint64_t entries = entries_.load(std::memory_order_relaxed);
      const uint64_t excess = entries > options_.max_entries ? entries - options_.max_entries : 0;
      for (uint64_t i = 0; i < std::min(excess, kBatch) && victim->blocks.size() > 0; ++i) EvictOne(*victim);
      Publish(*victim);
    }
  }

  // ---- Match ----

  // Score of a block held on a medium mask: the highest weight among its media.
  using MaskScores = std::array<double, 1 << kMaxMedia>;

  MaskScores ScoreMasks(const absl::flat_hash_map<std::string, double>& medium_weights) const {
    std::array<double, kMaxMedia> weights;
    weights.fill(1.0);
    for (const auto& [name, weight] : medium_weights) {
      if (auto bit = media_.Find(name)) weights[*bit] = weight;
    }
    MaskScores scores;
    scores[0] = 0;
    for (size_t mask = 1; mask < scores.size(); ++mask) {
      const int low = std::countr_zero(mask);
      const size_t rest = mask & (mask - 1);
      scores[mask] = rest == 0 ? weights[low] : std::max(weights[low], scores[rest]);
    }
    return scores;
  }

  // Walks blocks 0..n-1 (hash_at(i) gives X_i, called in order, at most
  // kPrefetchAhead blocks beyond the last one someone still matches) and
  // appends each worker's contiguous run.
  template <typename HashAt>
  void Walk(size_t n, HashAt hash_at, const std::vector<uint32_t>& candidates, const MaskScores& mask_score,
            uint32_t block_size, std::vector<RawMatch>& out) const {
    std::vector<RawMatch> active, next;
    // Holders of the last block merged, and how many blocks since had exactly
    // the same holders (common: a prefix cached everywhere). Those blocks are
    // credited in bulk, without a merge per block.
    std::vector<Holder> last;
    uint32_t repeats = 0;
    HolderTable::Scratch scratch;
    auto credit = [&](RawMatch& m, MediumMask mask, uint32_t blocks) {
      m.blocks += blocks;
      for (int b = 0; b < kMaxMedia; ++b) m.by_medium[b] += (mask >> b & 1) * blocks;
      m.score += mask_score[mask] * blocks;
      m.last_mask = mask;
    };
    auto flush_repeats = [&] {
      if (repeats == 0) return;
      for (RawMatch& a : active) credit(a, a.last_mask, repeats);
      repeats = 0;
    };
    // Hashes run kPrefetchAhead blocks ahead of the lookups, and each block's
    // slot is prefetched once its hash is known: on an index larger than the
    // cache, the lookups' misses overlap instead of queueing one per block.
    std::array<uint64_t, kPrefetchAhead> ahead;
    size_t hashed = 0;
    for (size_t i = 0; i < n; ++i) {
      for (; hashed < std::min(n, i + kPrefetchAhead); ++hashed) {
        ahead[hashed % kPrefetchAhead] = hash_at(hashed);
        PrefetchHolder(ahead[hashed % kPrefetchAhead]);
      }
      const uint64_t x = ahead[i % kPrefetchAhead];
      const Shard& shard = ShardOf(x);
      absl::ReaderMutexLock lock(&shard.mu);
      const absl::Span<const Holder> holders = shard.blocks.Find(x, scratch);
      if (holders.empty()) break;
      if (i > 0 && SameHolders(holders, last)) {
        ++repeats;
        continue;
      }
      flush_repeats();
      next.clear();
      if (i == 0) {
        size_t c = 0;
        for (const Holder& h : holders) {
          if (!candidates.empty()) {
            while (c < candidates.size() && candidates[c] < h.worker) ++c;
            if (c == candidates.size()) break;
            if (candidates[c] != h.worker) continue;
          }
          next.push_back(RawMatch{h.worker, 0, block_size, {}, 0, 0});
          credit(next.back(), h.media, 1);
        }
      } else {
        size_t h = 0;
        for (const RawMatch& a : active) {
          while (h < holders.size() && holders[h].worker < a.worker) ++h;
          if (h < holders.size() && holders[h].worker == a.worker) {
            next.push_back(a);
            credit(next.back(), holders[h].media, 1);
          } else {
            out.push_back(a);
          }
        }
      }
      active.swap(next);
      if (active.empty()) return;
      last.assign(holders.begin(), holders.end());
    }
    flush_repeats();
    out.insert(out.end(), active.begin(), active.end());
  }

  // Resolves worker ids, orders best first, and fills the query-level fields.
  MatchResult Finish(const MatchQuery& q, std::vector<RawMatch> raw) const {
    MatchResult result;
    // A worker may appear once per block size; keep its best run.
    std::sort(raw.begin(), raw.end(), [](const RawMatch& a, const RawMatch& b) {
      return a.worker != b.worker ? a.worker < b.worker : a.score > b.score;
    });
    raw.erase(std::unique(raw.begin(), raw.end(), [](const RawMatch& a, const RawMatch& b) { return a.worker == b.worker; }),
              raw.end());
    {
      absl::ReaderMutexLock lock(&workers_mu_);
      for (const RawMatch& r : raw) {
        auto it = by_id_.find(r.worker);
        if (it == by_id_.end()) continue;  // removed while we walked
        WorkerMatch m;
        m.worker = it->second->key;
        m.block_size = r.block_size != 0 ? r.block_size : it->second->block_size.load(std::memory_order_relaxed);
        m.matched_blocks = r.blocks;
        m.matched_tokens = r.blocks * m.block_size;
        m.score = r.score;
        for (int b = 0; b < kMaxMedia; ++b) {
          if (r.by_medium[b] != 0) m.blocks_by_medium.emplace_back(media_.Name(b), r.by_medium[b]);
        }
        result.workers.push_back(std::move(m));
      }
    }
    std::sort(result.workers.begin(), result.workers.end(), [](const WorkerMatch& a, const WorkerMatch& b) {
      if (a.score != b.score) return a.score > b.score;
      if (a.matched_blocks != b.matched_blocks) return a.matched_blocks > b.matched_blocks;
      return a.worker < b.worker;
    });
    if (!result.workers.empty()) {
      result.block_size = result.workers.front().block_size;
    } else {
      std::vector<uint32_t> sizes = BlockSizes(q.model, q.lora_name);
      if (!sizes.empty()) result.block_size = sizes.front();
    }
    if (!q.block_hashes.empty()) {
      result.query_blocks = static_cast<uint32_t>(q.block_hashes.size());
    } else if (result.block_size != 0) {
      result.query_blocks = static_cast<uint32_t>(q.token_ids.size() / result.block_size);
    }
    return result;
  }

  WorkerStats StatsOf(Worker& w) const {
    WorkerStats s;
    s.worker = w.key;
    absl::MutexLock lock(&w.mu);
    s.model = w.model;
    s.blocks = w.live.load(std::memory_order_relaxed);
    for (int b = 0; b < kMaxMedia; ++b) {
      if (w.blocks_by_medium[b] != 0) s.blocks_by_medium.emplace_back(media_.Name(b), w.blocks_by_medium[b]);
    }
    s.evictions = w.evictions;
    s.unresolved_parents = w.unresolved_parents;
    s.last_event_ts = w.last_event_ts;
    return s;
  }

  const IndexOptions options_;
  std::vector<Shard> shards_;
  int shard_shift_ = 0;
  MediumTable media_;

  mutable absl::Mutex workers_mu_;
  absl::flat_hash_map<WorkerKey, std::shared_ptr<Worker>> by_key_ ABSL_GUARDED_BY(workers_mu_);
  absl::flat_hash_map<uint32_t, std::shared_ptr<Worker>> by_id_ ABSL_GUARDED_BY(workers_mu_);
  absl::flat_hash_map<std::string, std::vector<uint32_t>> by_pod_ ABSL_GUARDED_BY(workers_mu_);
  uint32_t next_id_ ABSL_GUARDED_BY(workers_mu_) = 0;

  mutable absl::Mutex contexts_mu_;
  // (model, lora) -> block size -> number of workers that stored in it.
  std::map<std::pair<std::string, std::string>, std::map<uint32_t, uint32_t>, std::less<>> contexts_
      ABSL_GUARDED_BY(contexts_mu_);

  std::atomic<uint64_t> entries_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> unresolved_parents_{0};
};

PrefixIndex::PrefixIndex(IndexOptions options) : impl_(std::make_unique<Impl>(options)) {}
PrefixIndex::~PrefixIndex() = default;

ApplyResult PrefixIndex::Apply(const WorkerKey& worker, const WorkerContext& context, const EventBatch& batch) {
  return impl_->Apply(worker, context, batch);
}
void PrefixIndex::ClearWorker(const WorkerKey& worker) { impl_->ClearWorker(worker); }
void PrefixIndex::RemoveWorker(const WorkerKey& worker) { impl_->RemoveWorker(worker); }
void PrefixIndex::RemovePod(std::string_view pod) { impl_->RemovePod(pod); }
absl::StatusOr<MatchResult> PrefixIndex::Match(const MatchQuery& query) const { return impl_->Match(query); }
std::optional<WorkerStats> PrefixIndex::GetWorkerStats(const WorkerKey& worker) const {
  return impl_->GetWorkerStats(worker);
}
std::vector<WorkerStats> PrefixIndex::ListWorkers() const { return impl_->ListWorkers(); }
std::vector<uint64_t> PrefixIndex::EngineHashes(const WorkerKey& worker) const { return impl_->EngineHashes(worker); }
IndexStats PrefixIndex::Stats() const { return impl_->Stats(); }

}  // namespace kvindex
