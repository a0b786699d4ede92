#include "core/engine_map.h"

#include "absl/numeric/int128.h"

namespace kvindex {

std::optional<EngineMap::Block> EngineMap::Find(uint64_t engine) const {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return std::nullopt;
  return Block{engine, table_.ValueAt(pos), static_cast<MediumMask>(table_.TagAt(pos) & kMediaBits)};
}

void EngineMap::Put(uint64_t engine, uint64_t index, MediumMask media) {
  bool inserted;
  const size_t pos = table_.Insert(engine, kMarked | media, &inserted);
  table_.SetValueAt(pos, index);
  table_.SetTagAt(pos, kMarked | media);
}

void EngineMap::SetMedia(uint64_t engine, MediumMask media) {
  const size_t pos = table_.Find(engine);
  if (pos != table_.kNpos) table_.SetTagAt(pos, static_cast<uint8_t>((table_.TagAt(pos) & kMarked) | media));
}

bool EngineMap::Erase(uint64_t engine) {
  const size_t pos = table_.Find(engine);
  if (pos == table_.kNpos) return false;
  table_.EraseAt(pos);
  return true;
}

size_t EngineMap::RandomPosition() {
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  const uint64_t r = rng_ * 0x2545f4914f6cdd1dULL;
  return static_cast<size_t>(absl::Uint128High64(absl::uint128(r) * table_.capacity()));
}

EngineMap::Block EngineMap::EvictOne() {
  // Each look clears a mark or finds a victim, so marks are cleared at most
  // once per store; after many fruitless looks (tiny tables), scan instead.
  for (size_t looks = 0;; ++looks) {
    const size_t pos = looks < 4 * table_.capacity() ? RandomPosition() : looks % table_.capacity();
    if (!table_.Used(pos)) continue;
    const uint8_t tag = table_.TagAt(pos);
    if (tag & kMarked) {
      table_.SetTagAt(pos, tag & kMediaBits);
      continue;
    }
    const Block victim{table_.KeyAt(pos), table_.ValueAt(pos), static_cast<MediumMask>(tag)};
    table_.EraseAt(pos);
    return victim;
  }
}

}  // namespace kvindex
