#pragma once

// KV cache groups: a hybrid model (gpt-oss, Gemma 3: full + sliding-window
// attention; Qwen3-Next: attention + Mamba) keeps one block table per group,
// and its events name the group (../shared/wire/README.md "Hybrid models").
// The index holds each group of a worker as a holder of its own, named by a
// holder id (the worker's id and the group's slot in the worker), and Match
// combines a worker's groups by vLLM's hit rule per kind, stated here.
//
// Pure functions and values; thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvindex {

// A worker's groups take slots 0.. in the order their events first name them.
inline constexpr int kGroupBits = 4;
inline constexpr uint32_t kMaxGroupsPerWorker = 1u << kGroupBits;
// Group indices past this are not a real engine's (vLLM numbers its groups from 0).
inline constexpr uint32_t kMaxGroupIdx = 255;

// The holder id of a worker's group in the block table. Holders sort by
// worker first, so a worker's groups are adjacent.
inline uint32_t HolderId(uint32_t worker, uint32_t slot) { return worker << kGroupBits | slot; }
inline uint32_t WorkerOfHolder(uint32_t holder) { return holder >> kGroupBits; }
inline uint32_t SlotOfHolder(uint32_t holder) { return holder & (kMaxGroupsPerWorker - 1); }

// How a group decides a prefix hit (vLLM's find_longest_cache_hit).
enum class GroupKind : uint8_t {
  kFull,           // full / MLA / sink attention, and every kind kvindex does not know: blocks 0..n-1
  kSlidingWindow,  // the ceil((W-1)/B) blocks ending at n
  kMamba,          // block n-1 (the state at the boundary)
};

// The hit-rule kind of vLLM's kv_cache_spec_kind (nullopt: the engine did not say).
GroupKind KindOf(const std::optional<std::string>& kv_cache_spec_kind);

// Which group stands for a worker in Match's counts and in its stats (the
// primary group): full-attention kinds before the others, then the lowest
// group_idx. True when (kind, group_idx) comes before (other_kind, other_idx).
inline bool PrimaryBefore(GroupKind kind, uint32_t group_idx, GroupKind other_kind, uint32_t other_idx) {
  const bool full = kind == GroupKind::kFull, other_full = other_kind == GroupKind::kFull;
  return full != other_full ? full : group_idx < other_idx;
}

// What Match needs of a group, packed into one word so that it can be
// published to Match without a lock.
struct GroupShape {
  uint32_t group_idx = 0;
  GroupKind kind = GroupKind::kFull;
  uint32_t block_size = 0;  // 0: no block stored with tokens yet
  uint32_t window = 0;      // tokens, sliding-window groups; 0: unknown (the group counts as full)

  uint64_t Pack() const;
  static GroupShape Unpack(uint64_t word);

  // Under this group's rule, a hit ending at block boundary n (n > 0) needs
  // the group's blocks [FirstNeeded(n), n).
  uint32_t FirstNeeded(uint32_t n) const;
};

}  // namespace kvindex
