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

constexpr size_t kReserve = 4;  // address space reserved per mapped byte

uintptr_t RoundUp(uintptr_t x, size_t to) { return (x + to - 1) & ~(uintptr_t{to} - 1); }
uintptr_t RoundDown(uintptr_t x, size_t to) { return x & ~(uintptr_t{to} - 1); }
size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Makes [data + from, data + to) of a mapping resident: advises the whole
// 2 MiB ranges of [data, data + to) for huge pages first (populated before,
// they would get 4 KiB pages; a range populated in part at a smaller size
// keeps them, until the kernel's khugepaged collapses it, which the advice
// allows), then populates it in one call rather than a fault per page (a
// table is written all over at once; before Linux 5.14 the pages fault in
// as used). Advice that fails is harmless.
void Populate(char* data, size_t from, size_t to) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(data);
  const uintptr_t huge_from = RoundUp(base, kHugePage), huge_to = RoundDown(base + to, kHugePage);
  if (huge_to > huge_from) madvise(reinterpret_cast<void*>(huge_from), huge_to - huge_from, MADV_HUGEPAGE);
  const uintptr_t first = RoundDown(base + from, PageSize()), last = RoundUp(base + to, PageSize());
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE);
}

// A mapping reserving `reserved` bytes of address space (page-rounded),
// started on a 2 MiB boundary when it reaches 2 MiB; nothing populated. It
// is advised against huge pages until Populate says otherwise: where they
// are the default (THP "always"), a 2 MiB range only partly used, or not at
// all, would otherwise take 2 MiB of RSS when first touched.
char* Reserve(size_t reserved) {
  const bool huge = reserved >= kHugePage;
  const size_t span = huge ? reserved + kHugePage : reserved;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  char* start = static_cast<char*>(p);
  if (huge) {  // trims the slack before and after the aligned part
    char* aligned = reinterpret_cast<char*>(RoundUp(reinterpret_cast<uintptr_t>(start), kHugePage));
    if (aligned > start) munmap(start, aligned - start);
    if (start + span > aligned + reserved) munmap(aligned + reserved, start + span - (aligned + reserved));
    start = aligned;
  }
  madvise(start, reserved, MADV_NOHUGEPAGE);
  return start;
}

}  // namespace

TableMemory::TableMemory(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  if (bytes >= kMapFrom) {
    reserved_ = RoundUp(bytes * kReserve, PageSize());
    char* data = Reserve(reserved_);
    Populate(data, 0, bytes);
    data_ = data;
    return;
  }
  data_ = ::operator new(bytes, std::align_val_t{kAlignment});
  std::memset(data_, 0, bytes);
}

void TableMemory::Extend(size_t bytes) {
  Populate(static_cast<char*>(data_), bytes_, bytes);
  bytes_ = bytes;
}

TableMemory::~TableMemory() { Release(); }

TableMemory::TableMemory(TableMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      reserved_(std::exchange(other.reserved_, 0)) {}

TableMemory& TableMemory::operator=(TableMemory&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    reserved_ = std::exchange(other.reserved_, 0);
  }
  return *this;
}

void TableMemory::Release() {
  if (data_ == nullptr) return;
  if (reserved_ != 0) {
    munmap(data_, reserved_);
  } else {
    ::operator delete(data_, std::align_val_t{kAlignment});
  }
  data_ = nullptr;
}

}  // namespace kvindex
