#include "core/index/internal/block_table.h"

#include <algorithm>
#include <bit>
#include <limits>

namespace kvindex {
namespace {

MediumMask MaskOf(const std::array<uint16_t, kMaxMedia>& counts) {
  MediumMask m = 0;
  for (int b = 0; b < kMaxMedia; ++b) {
    if (counts[b] != 0) m |= MediumMask(1u << b);
  }
  return m;
}

}  // namespace

BlockTable::BlockTable(size_t shards)
    : shards_(std::bit_ceil(std::max<size_t>(1, shards))), shard_shift_(64 - std::countr_zero(shards_.size())) {}

void BlockTable::Apply(HolderUpdates& updates, const WorkerLock& worker) {
  std::vector<HolderOp>& pending = updates.pending_;
  if (pending.empty()) return;
  std::vector<uint32_t>& ends = updates.shard_ends_;
  ends.assign(shards_.size(), 0);
  for (const HolderOp& op : pending) ++ends[ShardIndex(op.x)];
  for (size_t i = 1; i < ends.size(); ++i) ends[i] += ends[i - 1];
  std::vector<HolderOp>& sorted = updates.by_shard_;
  sorted.resize(pending.size());
  for (size_t i = pending.size(); i-- > 0;) sorted[--ends[ShardIndex(pending[i].x)]] = pending[i];
  const size_t n = sorted.size();
  for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) Prefetch(sorted[i].x);
  for (size_t i = 0; i < n;) {
    Shard& shard = ShardOf(sorted[i].x);
    absl::MutexLock lock(&shard.lock.mu);
    do {
      if (i + kPrefetchAhead < n) Prefetch(sorted[i + kPrefetchAhead].x);
      ApplyOp(updates, shard, sorted[i]);
    } while (++i < n && &ShardOf(sorted[i].x) == &shard);
  }
  pending.clear();
}

// The callbacks given to HolderTable::Update run inside it, on this thread,
// under the shard's lock; they touch only the holder and the worker's aliases.
// `inline`: GCC then keeps it in Apply's loop, as it did before the split
// (callgrind, BM_ApplySteadyState: with WorkerBlocks::Queue in its header,
// 0.3 % fewer instructions per Apply than with a call per op).
inline void BlockTable::ApplyOp(HolderUpdates& updates, Shard& shard, const HolderOp& op) {
  const uint64_t x = op.x;
  auto& aliases = updates.aliases_;
  switch (op.kind) {
    case HolderOp::kAddRef:
      shard.blocks.Update(x, updates.worker_, /*create=*/true, [&](Holder& h) {
        if (h.refs == std::numeric_limits<uint16_t>::max()) return;  // absurd aliasing: keep the holder as is
        if (h.refs == 1) {
          HolderUpdates::AliasCounts counts{};
          for (int b = 0; b < kMaxMedia; ++b) counts[b] = (h.media >> b) & 1;
          aliases[x] = counts;
        }
        if (h.refs >= 1) ++aliases[x][std::countr_zero(op.a)];
        ++h.refs;
        h.media |= op.a;
      });
      return;
    case HolderOp::kChangeMedia:
      shard.blocks.Update(x, updates.worker_, /*create=*/false, [&](Holder& h) {
        auto alias = aliases.find(x);
        if (alias == aliases.end()) {
          h.media = op.b;
          return;
        }
        for (int b = 0; b < kMaxMedia; ++b) alias->second[b] += ((op.b >> b) & 1) - ((op.a >> b) & 1);
        h.media = MaskOf(alias->second);
      });
      return;
    case HolderOp::kDropRef:
      shard.blocks.Update(x, updates.worker_, /*create=*/false, [&](Holder& h) {
        --h.refs;
        auto alias = aliases.find(x);
        if (alias == aliases.end()) return;
        for (int b = 0; b < kMaxMedia; ++b) alias->second[b] -= (op.a >> b) & 1;
        h.media = MaskOf(alias->second);
        if (h.refs <= 1) aliases.erase(alias);
      });
      return;
    case HolderOp::kClear:
      shard.blocks.Update(x, updates.worker_, /*create=*/false, [](Holder& h) { h.refs = 0; });
      return;
  }
}

BlockTable::Usage BlockTable::Measure() const {
  Usage usage;
  for (const Shard& shard : shards_) {
    absl::ReaderMutexLock lock(&shard.lock.mu);
    usage.memory_bytes += sizeof(Shard) + shard.blocks.MemoryBytes();
    usage.blocks += shard.blocks.size();
  }
  return usage;
}

}  // namespace kvindex
