#include "core/index/internal/engine_map.h"

#include "absl/numeric/int128.h"

namespace kvindex {

std::optional<EngineMap::Block> EngineMap::Find(uint64_t engine) const {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  return BlockOf(engine, table_.ValueAt(pos), table_.TagAt(pos));
}

void EngineMap::Link(size_t pos) {
  Tag child = table_.TagAt(pos);
  if (child.parent == table_.KeyAt(pos)) return;  // none
  const size_t at = table_.Find(child.parent);
  if (at == table_.kNpos) return;
  Tag parent = table_.TagAt(at);
  if (Children(parent) != kMaxChildren) ++parent.children;  // (saturated: stays)
  table_.SetTagAt(at, parent);
  child.children |= kCounted;
  table_.SetTagAt(pos, child);
}

void EngineMap::Unlink(const Tag& child) {
  if (!(child.children & kCounted)) return;
  const size_t at = table_.Find(child.parent);
  if (at == table_.kNpos) return;  // (gone since; its count went with it)
  Tag parent = table_.TagAt(at);
  const uint16_t n = Children(parent);
  if (n == kMaxChildren || n == 0) return;  // saturated; or counted before the parent was stored again
  --parent.children;
  table_.SetTagAt(at, parent);
  if (n == 1) walk_ = child.parent;
}

std::optional<EngineMap::Block> EngineMap::Store(uint64_t engine, uint64_t index, MediumMask media,
                                                 std::optional<uint64_t> parent) {
  Note(engine);
  if (parent == engine) parent.reset();
  bool inserted;
  const size_t pos = table_.Insert(engine, &inserted);
  std::optional<Block> old;
  Tag tag{.parent = engine, .children = 0, .bits = 0};
  if (!inserted) {
    tag = table_.TagAt(pos);
    old = BlockOf(engine, table_.ValueAt(pos), tag);
    if (old->index == index) media |= old->media;
  }
  // A new block, a new parent, or one not counted yet (its parent was absent) links.
  const bool relink = inserted || old->parent != parent || !(tag.children & kCounted);
  if (relink && !inserted) {  // (the look-ups move nothing: pos stays valid)
    Unlink(tag);
    tag.children &= kMaxChildren;
  }
  tag.bits = kMarked | media;
  tag.parent = parent.value_or(engine);
  table_.SetValueAt(pos, index);
  table_.SetTagAt(pos, tag);
  if (relink) Link(pos);
  return old;
}

EngineMap::Block EngineMap::EraseAt(size_t pos) {
  const Tag tag = table_.TagAt(pos);
  const Block block = BlockOf(table_.KeyAt(pos), table_.ValueAt(pos), tag);
  Note(block.engine);
  table_.EraseAt(pos);
  Unlink(tag);
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
  // The block whose count last fell to zero (after an eviction, the chain's
  // next block), when not stored since; marked, its mark is its second
  // chance, and it stays the first try of the next eviction.
  if (walk_) {
    const size_t pos = table_.Find(*walk_);
    const Tag tag = pos == table_.kNpos ? Tag{} : table_.TagAt(pos);
    if (pos == table_.kNpos || Children(tag) != 0) {
      walk_.reset();
    } else if (!(tag.bits & kMarked)) {
      walk_.reset();
      return EraseAt(pos);
    } else {
      Tag unmarked = tag;
      unmarked.bits &= kMediaBits;
      table_.SetTagAt(pos, unmarked);
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
    if (Children(tag) == 0 || looks >= 6 * end) return EraseAt(pos);
  }
}

void EngineMap::RecountChildren() {
  // Zero every count, then count each link whose parent is held (no look-up moves anything).
  for (size_t pos = 0; pos < table_.end(); ++pos) {
    if (!table_.Used(pos)) continue;
    Tag tag = table_.TagAt(pos);
    tag.children = 0;
    table_.SetTagAt(pos, tag);
  }
  for (size_t pos = 0; pos < table_.end(); ++pos) {
    if (table_.Used(pos)) Link(pos);
  }
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
