#include "core/index/internal/table_memory.h"

#include <sys/mman.h>

#include <cstring>
#include <new>
#include <utility>

namespace kvindex {
namespace {

constexpr size_t kMapFrom = 16 * 1024;
constexpr size_t kHugePage = 2 * 1024 * 1024;

}  // namespace

TableMemory::TableMemory(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  if (bytes >= kMapFrom) {
    // Populated at once: one call instead of a page fault per page (a table is written all over at once).
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);  // zeroed
    if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (bytes >= kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // advice: failure is harmless
#endif
    data_ = p;
    mapped_ = true;
    return;
  }
  data_ = ::operator new(bytes, std::align_val_t{kAlignment});
  std::memset(data_, 0, bytes);
}

TableMemory::~TableMemory() { Release(); }

TableMemory::TableMemory(TableMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      mapped_(std::exchange(other.mapped_, false)) {}

TableMemory& TableMemory::operator=(TableMemory&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    mapped_ = std::exchange(other.mapped_, false);
  }
  return *this;
}

void TableMemory::Release() {
  if (data_ == nullptr) return;
  if (mapped_) {
    munmap(data_, bytes_);
  } else {
    ::operator delete(data_, std::align_val_t{kAlignment});
  }
  data_ = nullptr;
}

}  // namespace kvindex
