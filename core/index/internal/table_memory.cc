#include "core/index/internal/table_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <utility>

namespace kvindex {
namespace {

constexpr size_t kMapFrom = 16 * 1024;
constexpr size_t kHugePage = 2 * 1024 * 1024;

char* AlignUp(char* p, size_t alignment) {
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + alignment - 1) & ~(uintptr_t{alignment} - 1));
}

// A zeroed mapping of `bytes`, resident at once. From 2 MiB up it starts on a
// 2 MiB boundary and asks for transparent huge pages before any page is
// touched: populated first (MAP_POPULATE), it would get 4 KiB pages, and a
// lookup in a 5 GB table would cost a page walk as well as its cache miss.
void* MapTable(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const bool huge = bytes >= kHugePage;
  const size_t span = huge ? bytes + kHugePage : bytes;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  char* start = static_cast<char*>(p);
  if (huge) {  // trims the slack before and after the aligned part
    char* aligned = AlignUp(start, kHugePage);
    char* end = AlignUp(aligned + bytes, page);
    if (aligned > start) munmap(start, aligned - start);
    if (start + span > end) munmap(end, start + span - end);
    start = aligned;
    madvise(start, bytes, MADV_HUGEPAGE);  // advice: failure is harmless
  }
  // Populated in one call rather than a page fault per page (a table is
  // written all over at once); before Linux 5.14 the pages fault in as used.
  madvise(start, bytes, MADV_POPULATE_WRITE);
  return start;
}

}  // namespace

TableMemory::TableMemory(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  if (bytes >= kMapFrom) {
    data_ = MapTable(bytes);
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
