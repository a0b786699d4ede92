#include "core/holder_table.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace kvindex {

HolderTable::~HolderTable() {
  table_.ForEach([&](uint64_t, uint64_t v, uint8_t) {
    if (v != 0 && !IsPacked(v)) FreeList(reinterpret_cast<List*>(v));
  });
}

uint64_t HolderTable::Pack(const Holder& h) {
  return uint64_t{h.worker} << 32 | uint64_t{h.refs} << 16 | uint64_t{h.media} << 8 | 1;
}

Holder HolderTable::Unpack(uint64_t v) {
  return Holder{static_cast<uint32_t>(v >> 32), static_cast<uint16_t>(v >> 16), static_cast<MediumMask>(v >> 8), 0};
}

HolderTable::List* HolderTable::NewList(uint32_t capacity) {
  static_assert(alignof(List) >= alignof(Holder) && sizeof(List) % alignof(Holder) == 0);
  const size_t bytes = sizeof(List) + size_t{capacity} * sizeof(Holder);
  List* list = static_cast<List*>(::operator new(bytes));
  list->size = 0;
  list->capacity = capacity;
  heap_bytes_ += bytes;
  return list;
}

void HolderTable::FreeList(List* list) {
  heap_bytes_ -= sizeof(List) + size_t{list->capacity} * sizeof(Holder);
  ::operator delete(list);
}

absl::Span<const Holder> HolderTable::Find(uint64_t x, Holder& scratch) const {
  const size_t pos = table_.Find(x);
  if (pos == table_.kNpos) return {};
  const uint64_t v = table_.ValueAt(pos);
  if (IsPacked(v)) {
    scratch = Unpack(v);
    return {&scratch, 1};
  }
  List* list = reinterpret_cast<List*>(v);
  return {list->items(), list->size};
}

Holder* HolderTable::Acquire(uint64_t x, uint32_t worker, bool create) {
  size_t pos = table_.Find(x);
  if (pos == table_.kNpos) {
    if (!create) return nullptr;
    bool inserted;
    pos = table_.Insert(x, /*tag=*/1, &inserted);
    table_.SetValueAt(pos, 0);
    pos_ = pos;
    list_ = nullptr;
    scratch_ = Holder{worker, 0, 0, 0};
    return &scratch_;
  }
  pos_ = pos;
  uint64_t v = table_.ValueAt(pos);
  if (IsPacked(v)) {
    const Holder only = Unpack(v);
    if (only.worker == worker) {
      list_ = nullptr;
      scratch_ = only;
      return &scratch_;
    }
    if (!create) return nullptr;
    List* list = NewList(4);
    list->items()[0] = only;
    list->size = 1;
    v = reinterpret_cast<uint64_t>(list);
    table_.SetValueAt(pos, v);
  }
  List* list = reinterpret_cast<List*>(v);
  Holder* begin = list->items();
  Holder* it = std::lower_bound(begin, begin + list->size, worker,
                                [](const Holder& h, uint32_t id) { return h.worker < id; });
  item_ = static_cast<uint32_t>(it - begin);
  if (it == begin + list->size || it->worker != worker) {
    if (!create) return nullptr;
    if (list->size == list->capacity) {
      List* bigger = NewList(list->capacity + std::max<uint32_t>(4, list->capacity / 4));
      std::memcpy(bigger->items(), list->items(), list->size * sizeof(Holder));
      bigger->size = list->size;
      FreeList(list);
      list = bigger;
      table_.SetValueAt(pos, reinterpret_cast<uint64_t>(list));
    }
    Holder* items = list->items();
    std::memmove(items + item_ + 1, items + item_, (list->size - item_) * sizeof(Holder));
    items[item_] = Holder{worker, 0, 0, 0};
    ++list->size;
  }
  list_ = list;
  return &list->items()[item_];
}

void HolderTable::Release() {
  if (list_ == nullptr) {
    if (scratch_.refs == 0) {
      table_.EraseAt(pos_);
    } else {
      table_.SetValueAt(pos_, Pack(scratch_));
    }
    return;
  }
  Holder* items = list_->items();
  if (items[item_].refs == 0) {
    std::memmove(items + item_, items + item_ + 1, (list_->size - item_ - 1) * sizeof(Holder));
    --list_->size;
  }
  if (list_->size == 1) {
    table_.SetValueAt(pos_, Pack(items[0]));
    FreeList(list_);
  } else if (list_->size == 0) {
    FreeList(list_);
    table_.EraseAt(pos_);
  } else if (list_->capacity > 8 && list_->size * 2 <= list_->capacity) {
    List* smaller = NewList(list_->size + 4);
    std::memcpy(smaller->items(), items, list_->size * sizeof(Holder));
    smaller->size = list_->size;
    FreeList(list_);
    table_.SetValueAt(pos_, reinterpret_cast<uint64_t>(smaller));
  }
}

}  // namespace kvindex
