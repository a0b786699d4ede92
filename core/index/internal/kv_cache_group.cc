#include "core/index/internal/kv_cache_group.h"

#include <algorithm>

namespace kvindex {
namespace {

// GroupShape's word: group_idx 8 bits, kind 8, block_size 24, window 24.
constexpr uint64_t kMask24 = (uint64_t{1} << 24) - 1;

}  // namespace

GroupKind KindOf(const std::optional<std::string>& kind) {
  if (!kind) return GroupKind::kFull;
  if (*kind == "sliding_window" || *kind == "sliding_window_mla") return GroupKind::kSlidingWindow;
  if (*kind == "mamba") return GroupKind::kMamba;
  return GroupKind::kFull;  // full_attention, mla_attention, sink_full_attention, unknown, ...
}

uint64_t GroupShape::Pack() const {
  // Sizes past 24 bits are clamped: a block of 16M tokens matches nothing, and
  // a window of 16M tokens is longer than any prompt.
  return uint64_t{std::min(group_idx, 255u)} | uint64_t{static_cast<uint8_t>(kind)} << 8 |
         std::min<uint64_t>(block_size, kMask24) << 16 | std::min<uint64_t>(window, kMask24) << 40;
}

GroupShape GroupShape::Unpack(uint64_t word) {
  GroupShape s;
  s.group_idx = word & 0xff;
  s.kind = static_cast<GroupKind>(word >> 8 & 0xff);
  s.block_size = static_cast<uint32_t>(word >> 16 & kMask24);
  s.window = static_cast<uint32_t>(word >> 40 & kMask24);
  return s;
}

uint32_t GroupShape::FirstNeeded(uint32_t n) const {
  switch (kind) {
    case GroupKind::kSlidingWindow: {
      if (window == 0 || block_size == 0) return 0;
      const uint32_t needed = (window - 1 + block_size - 1) / block_size;  // ceil((W-1)/B)
      return n - std::min(n, needed);
    }
    case GroupKind::kMamba:
      return n - 1;
    case GroupKind::kFull:
      break;
  }
  return 0;
}

}  // namespace kvindex
