#include "core/index/internal/holder_table.h"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <new>

namespace kvindex {
namespace {

// Two packed holders: 010 | a.media:7 | a.worker:23 | b.media:7 | b.worker:23.
constexpr int kPairWorkerBits = 23;
constexpr int kPairMediaBits = 7;
constexpr int kPairHolderBits = kPairWorkerBits + kPairMediaBits;
constexpr uint64_t kPairMask = (uint64_t{1} << kPairHolderBits) - 1;
static_assert(kMaxMedia <= kPairMediaBits && 3 + 2 * kPairHolderBits <= 64);

uint64_t PackOne(const Holder& h) { return uint64_t{h.worker} << kPairMediaBits | h.media; }
// A Holder made from its fields as one 8-byte value, so that it is stored at
// once: the walk reads holders back as 8 bytes, which a few narrower stores
// would keep waiting (no store forwarding from several stores to one load).
Holder MakeHolder(uint32_t worker, uint16_t refs, MediumMask media) {
  static_assert(offsetof(Holder, worker) == 0 && offsetof(Holder, refs) == 4 && offsetof(Holder, media) == 6);
  return std::bit_cast<Holder>(uint64_t{worker} | uint64_t{refs} << 32 | uint64_t{media} << 48);
}

Holder UnpackOne(uint64_t bits) {
  return MakeHolder(static_cast<uint32_t>(bits >> kPairMediaBits), 1,
                    static_cast<MediumMask>(bits & ((1u << kPairMediaBits) - 1)));
}

// One holder's share of a list's digest: a bijective mix (MurmurHash3's
// finalizer) of its 8 bytes, so that different holders XOR to a random-looking sum.
uint64_t Mix(const Holder& h) {
  uint64_t v = std::bit_cast<uint64_t>(h);
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdULL;
  v ^= v >> 33;
  v *= 0xc4ceb9fe1a85ec53ULL;
  v ^= v >> 33;
  return v;
}

}  // namespace

uint64_t HolderTable::Digest(absl::Span<const Holder> holders) {
  uint64_t d = 0;
  for (const Holder& h : holders) d ^= Mix(h);
  return d;
}

HolderTable::~HolderTable() {
  table_.ForEach([&](uint64_t, uint64_t v, NoTag) {
    if (v != 0 && !IsPacked(v) && !IsPair(v)) FreeList(reinterpret_cast<List*>(v));
  });
}

uint64_t HolderTable::Pack(const Holder& h) {
  return uint64_t{h.worker} << 32 | uint64_t{h.refs} << 16 | uint64_t{h.media} << 8 | 1;
}

Holder HolderTable::Unpack(uint64_t v) {
  return MakeHolder(static_cast<uint32_t>(v >> 32), static_cast<uint16_t>(v >> 16), static_cast<MediumMask>(v >> 8));
}

bool HolderTable::Pairable(const Holder& a, const Holder& b) {
  constexpr uint32_t kWorkerLimit = 1u << kPairWorkerBits;
  return a.refs == 1 && b.refs == 1 && a.worker < kWorkerLimit && b.worker < kWorkerLimit;
}

uint64_t HolderTable::PackPair(const Holder& a, const Holder& b) {
  return 2 | PackOne(a) << 3 | PackOne(b) << (3 + kPairHolderBits);
}

HolderTable::Scratch HolderTable::UnpackPair(uint64_t v) {
  return {UnpackOne(v >> 3 & kPairMask), UnpackOne(v >> (3 + kPairHolderBits) & kPairMask)};
}

HolderTable::List* HolderTable::NewList(uint32_t capacity) {
  static_assert(alignof(List) >= alignof(Holder) && sizeof(List) % alignof(Holder) == 0);
  const size_t bytes = sizeof(List) + size_t{capacity} * sizeof(Holder);
  List* list = static_cast<List*>(::operator new(bytes));
  list->size = 0;
  list->capacity = capacity;
  list->digest = 0;
  heap_bytes_ += bytes;
  return list;
}

void HolderTable::FreeList(List* list) {
  heap_bytes_ -= sizeof(List) + size_t{list->capacity} * sizeof(Holder);
  ::operator delete(list);
}

absl::Span<const Holder> HolderTable::Find(uint64_t x, Scratch& scratch) const {
  const size_t pos = table_.Find(x);
  if (pos == table_.kNpos) return {};
  const uint64_t v = table_.ValueAt(pos);
  if (IsPacked(v)) {
    scratch[0] = Unpack(v);
    return {scratch.data(), 1};
  }
  if (IsPair(v)) {
    scratch = UnpackPair(v);
    return {scratch.data(), 2};
  }
  List* list = reinterpret_cast<List*>(v);
  return {list->items(), list->size};
}

Holder* HolderTable::Acquire(uint64_t x, uint32_t worker, bool create) {
  bool inserted = false;
  const size_t pos = create ? table_.Insert(x, &inserted) : table_.Find(x);  // a new slot holds 0 until Release
  if (pos == table_.kNpos) return nullptr;
  const uint64_t v = table_.ValueAt(pos);
  pos_ = pos;
  Holder* begin;
  uint32_t size;
  uint32_t capacity;
  if (v == 0 || IsPacked(v) || IsPair(v)) {
    list_ = nullptr;
    inline_size_ = v == 0 ? 0 : IsPacked(v) ? 1 : 2;
    if (inline_size_ == 1) inline_[0] = Unpack(v);
    if (inline_size_ == 2) {
      const Scratch pair = UnpackPair(v);
      std::copy(pair.begin(), pair.end(), inline_.begin());
    }
    begin = inline_.data();
    size = inline_size_;
    capacity = static_cast<uint32_t>(inline_.size());
  } else {
    list_ = reinterpret_cast<List*>(v);
    begin = list_->items();
    size = list_->size;
    capacity = list_->capacity;
  }
  Holder* it = std::lower_bound(begin, begin + size, worker, [](const Holder& h, uint32_t id) { return h.worker < id; });
  item_ = static_cast<uint32_t>(it - begin);
  if (it != begin + size && it->worker == worker) {
    if (list_ != nullptr) list_->digest ^= Mix(*it);  // Release adds it back as it is then
    return it;
  }
  if (!create) return nullptr;
  if (size == capacity) {  // only a heap list fills up: inline_ has room for one more than a pair
    List* bigger = NewList(capacity + std::max<uint32_t>(4, capacity / 4));
    std::memcpy(bigger->items(), begin, size * sizeof(Holder));
    bigger->size = size;
    bigger->digest = list_->digest;
    FreeList(list_);
    list_ = bigger;
    table_.SetValueAt(pos, reinterpret_cast<uint64_t>(list_));
    begin = list_->items();
  }
  std::memmove(begin + item_ + 1, begin + item_, (size - item_) * sizeof(Holder));
  begin[item_] = Holder{worker, 0, 0, 0};
  if (list_ != nullptr) {
    ++list_->size;
  } else {
    ++inline_size_;
  }
  return &begin[item_];
}

void HolderTable::Release() {
  Holder* items = list_ != nullptr ? list_->items() : inline_.data();
  uint32_t& size = list_ != nullptr ? list_->size : inline_size_;
  if (items[item_].refs == 0) {
    std::memmove(items + item_, items + item_ + 1, (size - item_ - 1) * sizeof(Holder));
    --size;
  } else if (list_ != nullptr) {
    list_->digest ^= Mix(items[item_]);  // back into the digest as it is now
  }
  // The most compact form for what is left.
  uint64_t packed = 0;
  if (size == 1) {
    packed = Pack(items[0]);
  } else if (size == 2 && Pairable(items[0], items[1])) {
    packed = PackPair(items[0], items[1]);
  }
  if (size == 0) {
    if (list_ != nullptr) FreeList(list_);
    table_.EraseAt(pos_);
  } else if (packed != 0) {
    if (list_ != nullptr) FreeList(list_);
    table_.SetValueAt(pos_, packed);
  } else if (list_ == nullptr) {  // unpacked holders that no longer pack
    List* list = NewList(size + 1);
    std::memcpy(list->items(), items, size * sizeof(Holder));
    list->size = size;
    list->digest = Digest({items, size});
    table_.SetValueAt(pos_, reinterpret_cast<uint64_t>(list));
  } else if (list_->capacity > 8 && list_->size * 2 <= list_->capacity) {
    List* smaller = NewList(list_->size + 4);
    std::memcpy(smaller->items(), items, list_->size * sizeof(Holder));
    smaller->size = list_->size;
    smaller->digest = list_->digest;
    FreeList(list_);
    table_.SetValueAt(pos_, reinterpret_cast<uint64_t>(smaller));
  }
}

}  // namespace kvindex
