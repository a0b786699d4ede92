#include "core/index/internal/engine_map.h"

#include "absl/numeric/int128.h"

namespace kvindex {

std::optional<EngineMap::Block> EngineMap::Find(uint64_t engine) const {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  return Block{engine, table_.ValueAt(pos), static_cast<MediumMask>(table_.TagAt(pos) & kMediaBits)};
}

std::optional<EngineMap::Block> EngineMap::Store(uint64_t engine, uint64_t index, MediumMask media) {
  Note(engine);
  bool inserted;
  const size_t pos = table_.Insert(engine, &inserted);
  std::optional<Block> old;
  if (!inserted) {
    old = Block{engine, table_.ValueAt(pos), static_cast<MediumMask>(table_.TagAt(pos) & kMediaBits)};
    if (old->index == index) media |= old->media;
  }
  table_.SetValueAt(pos, index);
  table_.SetTagAt(pos, kMarked | media);
  return old;
}

std::optional<EngineMap::Block> EngineMap::Remove(uint64_t engine, MediumMask media) {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  const uint8_t tag = table_.TagAt(pos);
  const Block block{engine, table_.ValueAt(pos), static_cast<MediumMask>(tag & kMediaBits)};
  if (!(block.media & media)) return std::nullopt;
  Note(engine);
  if (block.media == media) {
    table_.EraseAt(pos);
  } else {
    table_.SetTagAt(pos, static_cast<uint8_t>(tag & ~media));
  }
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
  // Each look clears a mark or finds a victim, so marks are cleared at most
  // once per store; after many fruitless looks (tiny tables), scan instead.
  for (size_t looks = 0;; ++looks) {
    const size_t pos = looks < 4 * table_.end() ? RandomPosition() : looks % table_.end();
    if (!table_.Used(pos)) continue;
    const uint8_t tag = table_.TagAt(pos);
    if (tag & kMarked) {
      table_.SetTagAt(pos, tag & kMediaBits);
      continue;
    }
    const Block victim{table_.KeyAt(pos), table_.ValueAt(pos), static_cast<MediumMask>(tag)};
    Note(victim.engine);
    table_.EraseAt(pos);
    return victim;
  }
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
}

void EngineMap::BeginCut() {
  cut_ = std::make_unique<Cut>();
  table_.Pin(&cut_->pending);
  if (table_.Find(0) != table_.kNpos) cut_->pending.push_back(0);
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
