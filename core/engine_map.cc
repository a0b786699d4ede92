#include "core/engine_map.h"

namespace kvindex {

std::optional<EngineMap::Block> EngineMap::Find(uint64_t engine) const {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  return Block{engine, table_.ValueAt(pos), static_cast<MediumMask>(table_.TagAt(pos) & kMediaBits)};
}

void EngineMap::Put(uint64_t engine, uint64_t index, MediumMask media) {
  bool inserted;
  const size_t pos = table_.Insert(engine, kReferenced | media, &inserted);
  table_.ValueAt(pos) = index;
  table_.TagAt(pos) = kReferenced | media;
}

void EngineMap::SetMedia(uint64_t engine, MediumMask media) {
  const size_t pos = table_.Find(engine);
  if (pos != table_.kNpos) table_.TagAt(pos) = static_cast<uint8_t>((table_.TagAt(pos) & kReferenced) | media);
}

bool EngineMap::Erase(uint64_t engine) {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return false;
  table_.EraseAt(pos);
  return true;
}

EngineMap::Block EngineMap::EvictOne() {
  // Terminates within two sweeps: the first clears every mark it passes.
  for (;; hand_ = hand_ + 1 >= table_.capacity() ? 0 : hand_ + 1) {
    if (hand_ >= table_.capacity()) hand_ = 0;
    if (!table_.Used(hand_)) continue;
    uint8_t& tag = table_.TagAt(hand_);
    if (tag & kReferenced) {
      tag &= kMediaBits;
      continue;
    }
    const Block victim{table_.KeyAt(hand_), table_.ValueAt(hand_), static_cast<MediumMask>(tag)};
    table_.EraseAt(hand_);  // an entry shifted into hand_ is examined next time
    return victim;
  }
}

}  // namespace kvindex
