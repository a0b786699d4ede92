// WorkerBlocks' snapshot calls: Export copies the worker out under its lock,
// Import fills a new worker back in through Store (so the block table, the
// aliases, the per-medium counts and the contexts are rebuilt exactly as
// applying the worker's events would have left them). Media travel by name.

#include <algorithm>
#include <bit>
#include <optional>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/index/internal/worker_blocks.h"

namespace kvindex {

static_assert(kSnapshotMedia == kMaxMedia, "a snapshot names every medium bit of a worker");

WorkerSnapshot WorkerBlocks::Export() const {
  WorkerSnapshot out;
  out.worker = key_;
  {
    absl::MutexLock lock(&lock_.mu);
    out.model = model_;
    out.default_lora = default_lora_;
    out.cursor = cursor_;
    out.last_event_ts = last_event_ts_;
    for (const ContextKey& c : used_contexts_) {
      out.contexts.push_back(SnapshotContext{std::get<0>(c), std::get<1>(c), std::get<2>(c)});
    }
    out.groups.reserve(groups_.size());
    for (const auto& group : groups_) {
      const Group& g = *group;
      GroupSnapshot& gs = out.groups.emplace_back();
      gs.group_idx = g.group_idx;
      gs.named = g.named;
      gs.kind = g.kind;
      gs.window = g.window;
      gs.block_size = g.block_size;
      gs.blocks.reserve(g.blocks.size());
      g.blocks.ForEach([&gs](const EngineMap::Block& b) { gs.blocks.push_back({b.engine, b.index, b.media}); });
      gs.tracks_parents = g.parents != nullptr;
      if (g.parents != nullptr) gs.parents.assign(g.parents->begin(), g.parents->end());
      std::copy(g.chunk_blocks.begin(), g.chunk_blocks.end(), gs.chunk_blocks.begin());
    }
  }
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
    groups_.push_back(std::make_unique<Group>(HolderId(id_, static_cast<uint32_t>(groups_.size()))));
    Group& g = *groups_.back();
    g.group_idx = gs.group_idx;
    g.named = gs.named;
    g.kind = gs.kind;
    g.window = gs.window;
    g.block_size = gs.block_size;
    if (gs.tracks_parents) {
      g.parents = std::make_unique<absl::flat_hash_map<uint64_t, uint64_t>>(gs.parents.begin(), gs.parents.end());
    }
    for (int b = 0; b < kMaxMedia; ++b) {
      if (gs.chunk_blocks[b] != 0) g.chunk_blocks[std::countr_zero(bit_of[b])] = gs.chunk_blocks[b];
    }
    for (const SnapshotBlock& b : gs.blocks) Store(g, b.engine, b.index, local(b.media));
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
