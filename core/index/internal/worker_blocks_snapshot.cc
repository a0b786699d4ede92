// WorkerBlocks' snapshot calls: Export copies the worker out in bounded
// steps of its lock (a cut, see worker_blocks.h), Import fills a new worker
// back in through Store (so the block table, the aliases, the per-medium
// counts and the contexts are rebuilt exactly as applying the worker's events
// would have left them). Media travel by name.

#include <algorithm>
#include <bit>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/index/internal/worker_blocks.h"

namespace kvindex {

static_assert(kSnapshotMedia == kMaxMedia, "a snapshot names every medium bit of a worker");

namespace {

// Elements written under a lock into memory made ready before it: the
// vector is grown (and so its pages touched: a first-touch page fault costs
// ~16 us here, 100 ns an entry) with no lock held, and a hold only writes.
template <typename T>
struct Buffer {
  std::vector<T> v;  // [0, n) written; the rest ready
  size_t n = 0;
  // With no lock held: room for `more` further elements (touching no more
  // than that: the vector's capacity grows geometrically by itself).
  void Ready(size_t more) {
    if (v.size() - n < more) v.resize(n + more);
  }
  void Push(const T& t) { v[n++] = t; }  // requires room
  std::vector<T> Take() {
    v.resize(n);
    return std::move(v);
  }
};

// One group's copy while an export runs (WorkerBlocks::Export, step 2).
struct GroupCopy {
  Buffer<SnapshotBlock> blocks;                   // in pinned order
  Buffer<std::pair<uint64_t, uint64_t>> parents;  // of those blocks that have one
  bool scanned = false;
};

// Times one hold of the worker's lock into an ExportPause (declared after the
// lock, so it stops before the lock is released).
class HoldClock {
 public:
  explicit HoldClock(ExportPause& pause, absl::Duration* held = nullptr)
      : pause_(pause), held_(held), start_(absl::Now()) {}
  ~HoldClock() {
    const absl::Duration held = absl::Now() - start_;
    pause_.longest_hold = std::max(pause_.longest_hold, held);
    ++pause_.holds;
    if (held_ != nullptr) *held_ = held;
  }
  HoldClock(const HoldClock&) = delete;
  HoldClock& operator=(const HoldClock&) = delete;

 private:
  ExportPause& pause_;
  absl::Duration* const held_;
  const absl::Time start_;
};

// After a hold of `held`, stays off the lock as long, so that an Apply
// waiting for it gets it: absl::Mutex does not hand a released lock to a
// waiter, and an export re-locking at once starved the worker's Apply for
// hundreds of ms (measured). A big worker's export thus takes at most about
// half of its lock time. Holds under kShort (a small worker's, O(groups)
// ones) are not followed by a sleep: a worker of 10,000 would pay for it.
void LetWaitersIn(absl::Duration held) {
  constexpr absl::Duration kShort = absl::Microseconds(100);
  if (held >= kShort) absl::SleepFor(held);
}

// A group's blocks at T (Export's invariant): the copied blocks whose key was
// not settled (none when the group was cleared), then every settled block.
void Assemble(GroupCopy& c, EngineMap::CutResult& cut, GroupSnapshot& gs) {
  gs.blocks = c.blocks.Take();
  gs.parents = c.parents.Take();
  if (cut.cleared) {
    gs.blocks.clear();
    gs.parents.clear();
  } else if (!cut.settled.empty()) {
    std::erase_if(gs.blocks, [&cut](const SnapshotBlock& b) { return cut.settled.contains(b.engine); });
    std::erase_if(gs.parents,
                  [&cut](const std::pair<uint64_t, uint64_t>& p) { return cut.settled.contains(p.first); });
  }
  for (const auto& [engine, block] : cut.settled) {
    if (!block.has_value()) continue;
    gs.blocks.push_back({engine, block->index, block->media});
    if (block->parent.has_value()) gs.parents.emplace_back(engine, *block->parent);
  }
}

}  // namespace

void WorkerBlocks::SettleCuts() {
  for (const auto& group : groups_) group->blocks.SettleCut();
}

WorkerSnapshot WorkerBlocks::Export(ExportPause* pause, const ExportSteps& steps) {
  ExportPause own_pause;
  ExportPause& p = pause != nullptr ? *pause : own_pause;
  p = ExportPause{};
  absl::MutexLock export_lock(&export_lock_.mu);
  // 1. Start the cuts.
  std::vector<GroupCopy> copies;
  absl::Duration held;  // the last hold
  {
    absl::MutexLock lock(&lock_.mu);
    HoldClock clock(p, &held);
    exporting_ = true;
    copies.resize(groups_.size());
    for (size_t slot = 0; slot < groups_.size(); ++slot) {
      Group& g = *groups_[slot];
      g.blocks.BeginCut();
      copies[slot].blocks.v.reserve(g.blocks.size() + steps.positions);  // (address space: nothing touched)
    }
    SettleCuts();  // (key 0)
  }
  // 2. Copy the pinned positions, group by group (a group created since step 1
  // has none: its cut began empty).
  for (size_t slot = 0; slot < copies.size(); ++slot) {
    GroupCopy& c = copies[slot];
    while (!c.scanned) {
      c.blocks.Ready(steps.positions);
      c.parents.Ready(steps.positions);
      LetWaitersIn(held);
      absl::MutexLock lock(&lock_.mu);
      HoldClock clock(p, &held);
      c.scanned = !groups_[slot]->blocks.CopyCut(steps.positions, [&c](const EngineMap::Block& b) {
        c.blocks.Push({b.engine, b.index, b.media});
        if (b.parent.has_value()) c.parents.Push({b.engine, *b.parent});
      });
    }
  }
  // 3. T: the rest as it is now, and what each group settled.
  WorkerSnapshot out;
  out.worker = key_;
  std::vector<EngineMap::CutResult> cuts;
  LetWaitersIn(held);
  {
    absl::MutexLock lock(&lock_.mu);
    HoldClock clock(p);
    SettleCuts();  // (nothing pending: every call that changes blocks ends settled)
    out.model = model_;
    out.default_lora = default_lora_;
    out.cursor = removed_ ? std::nullopt : cursor_;
    out.last_event_ts = last_event_ts_;
    for (const ContextKey& c : used_contexts_) {
      out.contexts.push_back(SnapshotContext{std::get<0>(c), std::get<1>(c), std::get<2>(c)});
    }
    out.groups.reserve(groups_.size());
    cuts.reserve(groups_.size());
    for (const auto& group : groups_) {
      Group& g = *group;
      GroupSnapshot& gs = out.groups.emplace_back();
      gs.group_idx = g.group_idx;
      gs.named = g.named;
      gs.kind = g.kind;
      gs.window = g.window;
      gs.block_size = g.block_size;
      std::copy(g.chunk_blocks.begin(), g.chunk_blocks.end(), gs.chunk_blocks.begin());
      cuts.push_back(g.blocks.EndCut());  // (what it kept is freed below, unlocked)
    }
    exporting_ = false;
  }
  copies.resize(out.groups.size());
  for (size_t slot = 0; slot < out.groups.size(); ++slot) Assemble(copies[slot], cuts[slot], out.groups[slot]);
  cuts.clear();
  // Every bit the copy uses was published before it was stored.
  media_.ForEach([&out](int bit, const std::string& name) { out.media[bit] = name; });
  std::sort(out.contexts.begin(), out.contexts.end(), [](const SnapshotContext& a, const SnapshotContext& b) {
    return std::tie(a.model, a.lora, a.block_size) < std::tie(b.model, b.lora, b.block_size);
  });
  return out;
}

absl::Status WorkerBlocks::Validate(const WorkerSnapshot& s) {
  const std::string who = WorkerKeyString(s.worker);
  if (s.groups.size() > kMaxGroupsPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat("worker ", who, ": ", s.groups.size(), " groups, at most ",
                                                   kMaxGroupsPerWorker));
  }
  uint8_t named = 0;
  for (int b = 0; b < kSnapshotMedia; ++b) {
    if (!s.media[b].empty()) named |= static_cast<uint8_t>(1u << b);
  }
  absl::flat_hash_set<uint32_t> seen;
  for (const GroupSnapshot& g : s.groups) {
    if (g.group_idx > kMaxGroupIdx || !seen.insert(g.group_idx).second) {
      return absl::InvalidArgumentError(absl::StrCat("worker ", who, ": group_idx ", g.group_idx,
                                                     " past ", kMaxGroupIdx, " or named twice"));
    }
    for (const SnapshotBlock& b : g.blocks) {
      if (b.media == 0 || (b.media & ~named) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("worker ", who, ": block ", b.engine, " on tiers 0x",
                                                       absl::Hex(b.media), ", named 0x", absl::Hex(named)));
      }
    }
    for (int b = 0; b < kSnapshotMedia; ++b) {
      if (g.chunk_blocks[b] != 0 && ((named >> b & 1) == 0 || g.chunk_blocks[b] > kMaxChunkBlocks)) {
        return absl::InvalidArgumentError(absl::StrCat("worker ", who, ": chunks of ", g.chunk_blocks[b],
                                                       " blocks on tier bit ", b));
      }
    }
  }
  return absl::OkStatus();
}

uint64_t WorkerBlocks::Import(const WorkerSnapshot& s, size_t max_blocks) {
  // This process's bit of each medium the snapshot names (registered before
  // the worker's lock: MediumTable's own comes after every other).
  std::array<MediumMask, kMaxMedia> bit_of = {};
  for (int b = 0; b < kMaxMedia; ++b) {
    if (!s.media[b].empty()) bit_of[b] = media_.BitOf(std::optional<std::string>(s.media[b]));
  }
  auto local = [&bit_of](uint8_t media) {
    MediumMask out = 0;
    for (int b = 0; b < kMaxMedia; ++b) {
      if (media >> b & 1) out |= bit_of[b];
    }
    return out;
  };
  uint64_t evictions = 0;
  absl::MutexLock lock(&lock_.mu);
  if (removed_) return 0;
  model_ = s.model;
  default_lora_ = s.default_lora;
  cursor_ = s.cursor;
  last_event_ts_ = s.last_event_ts;
  for (const SnapshotContext& c : s.contexts) {
    ContextKey key{c.model, c.lora, c.block_size};
    if (used_contexts_.insert(key).second) contexts_.Use(key, lock_);
  }
  for (const GroupSnapshot& gs : s.groups) {
    Group& g = NewGroup();
    g.group_idx = gs.group_idx;
    g.named = gs.named;
    g.kind = gs.kind;
    g.window = gs.window;
    g.block_size = gs.block_size;
    for (int b = 0; b < kMaxMedia; ++b) {
      if (gs.chunk_blocks[b] != 0) g.chunk_blocks[std::countr_zero(bit_of[b])] = gs.chunk_blocks[b];
    }
    // The map sized once (no rehash while it fills), each store
    // kPrefetchAhead blocks behind the prefetch of its slot; the blocks come
    // in any order, so their children are counted once all are in.
    const absl::flat_hash_map<uint64_t, uint64_t> parents(gs.parents.begin(), gs.parents.end());
    g.blocks.Reserve(gs.blocks.size());
    const size_t n = gs.blocks.size();
    for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) g.blocks.Prefetch(gs.blocks[i].engine);
    for (size_t i = 0; i < n; ++i) {
      if (i + kPrefetchAhead < n) g.blocks.Prefetch(gs.blocks[i + kPrefetchAhead].engine);
      const SnapshotBlock& b = gs.blocks[i];
      const auto parent = parents.find(b.engine);
      Store(g, b.engine, b.index, local(b.media),
            parent == parents.end() ? std::nullopt : std::optional<uint64_t>(parent->second));
    }
    g.blocks.RecountChildren();
  }
  if (max_blocks != 0) {
    for (size_t held = BlocksLocked(); held > max_blocks; --held) {
      EvictOne();
      ++evictions;
    }
  }
  Publish();
  return evictions;
}

}  // namespace kvindex
