#include "core/index/internal/engine_map.h"

#include "absl/numeric/int128.h"

namespace kvindex {

std::optional<EngineMap::Block> EngineMap::Find(uint64_t engine) const {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  return BlockOf(engine, table_.ValueAt(pos), table_.TagAt(pos));
}

void EngineMap::CountChild(std::optional<uint64_t> parent, int delta) {
  if (!parent) return;
  const size_t pos = table_.Find(*parent);
  if (pos == table_.kNpos) return;
  Tag tag = table_.TagAt(pos);
  if (tag.children == kMaxChildren) return;  // saturated
  if (delta < 0 && tag.children == 0) return;  // a child stored before its parent was (not counted)
  tag.children = static_cast<uint16_t>(tag.children + delta);
  table_.SetTagAt(pos, tag);
  if (tag.children == 0 && delta < 0) walk_ = *parent;
}

std::optional<EngineMap::Block> EngineMap::Store(uint64_t engine, uint64_t index, MediumMask media,
                                                 std::optional<uint64_t> parent) {
  Note(engine);
  if (parent == engine) parent.reset();
  bool inserted;
  size_t pos = table_.Insert(engine, &inserted);
  std::optional<Block> old;
  Tag tag{.parent = engine, .children = 0, .bits = 0};
  if (!inserted) {
    tag = table_.TagAt(pos);
    old = BlockOf(engine, table_.ValueAt(pos), tag);
    if (old->index == index) media |= old->media;
  }
  tag.bits = kMarked | media;
  tag.parent = parent.value_or(engine);
  table_.SetValueAt(pos, index);
  table_.SetTagAt(pos, tag);
  if (inserted || old->parent != parent) {  // (the look-ups move nothing)
    if (!inserted) CountChild(old->parent, -1);
    CountChild(parent, +1);
  }
  return old;
}

EngineMap::Block EngineMap::EraseAt(size_t pos) {
  const Block block = BlockOf(table_.KeyAt(pos), table_.ValueAt(pos), table_.TagAt(pos));
  Note(block.engine);
  table_.EraseAt(pos);
  CountChild(block.parent, -1);
  return block;
}

std::optional<EngineMap::Block> EngineMap::Remove(uint64_t engine, MediumMask media) {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  Tag tag = table_.TagAt(pos);
  const Block block = BlockOf(engine, table_.ValueAt(pos), tag);
  if (!(block.media & media)) return std::nullopt;
  if (block.media == media) return EraseAt(pos);
  Note(engine);
  tag.bits = static_cast<uint8_t>(tag.bits & ~media);
  table_.SetTagAt(pos, tag);
  return block;
}

size_t EngineMap::RandomPosition() {
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  const uint64_t r = rng_ * 0x2545f4914f6cdd1dULL;
  return static_cast<size_t>(absl::Uint128High64(absl::uint128(r) * table_.end()));
}

EngineMap::Block EngineMap::EvictOne() {
  // The parent the last eviction left a leaf: the chain's next block, when
  // not stored since (else its mark is its second chance).
  if (const std::optional<uint64_t> walk = std::exchange(walk_, std::nullopt)) {
    if (const size_t pos = table_.Find(*walk); pos != table_.kNpos) {
      Tag tag = table_.TagAt(pos);
      if (tag.children == 0 && !(tag.bits & kMarked)) return EraseAt(pos);
      tag.bits &= kMediaBits;
      table_.SetTagAt(pos, tag);
    }
  }
  // Each look clears a mark or finds a victim, so marks are cleared at most
  // once per store. After many fruitless looks (tiny tables, few leaves),
  // scan in order instead: one pass clears every mark, so the second finds
  // an unmarked leaf; past two passes (no leaf: counts saturated) any
  // unmarked block will do.
  const size_t end = table_.end();
  for (size_t looks = 0;; ++looks) {
    const size_t pos = looks < 4 * end ? RandomPosition() : looks % end;
    if (!table_.Used(pos)) continue;
    Tag tag = table_.TagAt(pos);
    if (tag.bits & kMarked) {
      tag.bits &= kMediaBits;
      table_.SetTagAt(pos, tag);
      continue;
    }
    if (tag.children == 0 || looks >= 6 * end) return EraseAt(pos);
  }
}

void EngineMap::RecountChildren() {
  // Zero every count, then count each link whose parent is held.
  std::vector<uint64_t> parents;
  parents.reserve(table_.size());
  table_.ForEach([&parents](uint64_t engine, uint64_t, Tag tag) {
    if (tag.parent != engine) parents.push_back(tag.parent);
  });
  for (size_t pos = 0; pos < table_.end(); ++pos) {
    if (!table_.Used(pos)) continue;
    Tag tag = table_.TagAt(pos);
    tag.children = 0;
    table_.SetTagAt(pos, tag);
  }
  for (const uint64_t parent : parents) CountChild(parent, +1);
  walk_.reset();
}

void EngineMap::Clear() {
  if (cut_ != nullptr) {  // nothing copied or settled counts any more, and no step is left
    cut_->cleared = true;
    cut_->next = 0;
    cut_->pending.clear();
    cut_->settled.clear();
    table_.Unpin();
  }
  table_.Clear();
  walk_.reset();
}

void EngineMap::BeginCut() {
  cut_ = std::make_unique<Cut>();
  table_.Pin(&cut_->pending);
  if (table_.Find(0) != table_.kNpos) cut_->pending.push_back(0);
}

void EngineMap::SettleCut() {
  if (cut_ == nullptr) return;
  for (const uint64_t engine : cut_->pending) cut_->settled[engine] = Find(engine);
  cut_->pending.clear();
}

EngineMap::CutResult EngineMap::EndCut() {
  CutResult out;
  out.cleared = cut_->cleared;
  out.settled = std::move(cut_->settled);
  out.kept = table_.Unpin();
  cut_.reset();
  return out;
}

}  // namespace kvindex
