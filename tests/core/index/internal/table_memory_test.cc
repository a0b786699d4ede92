#include "core/index/internal/table_memory.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <utility>

#include "gtest/gtest.h"

namespace kvindex {
namespace {

size_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// The process's address space (VmSize).
size_t MappedBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  statm >> pages;
  return pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

bool AllZero(const TableMemory& m) {
  const auto* p = static_cast<const unsigned char*>(m.data());
  for (size_t i = 0; i < m.bytes(); ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

TEST(TableMemoryTest, SmallAndLargeAreZeroedAndAligned) {
  for (size_t bytes : {size_t{128}, size_t{4096}, size_t{64 * 1024}, size_t{3 * 1024 * 1024}}) {
    TableMemory m(bytes);
    ASSERT_NE(m.data(), nullptr);
    EXPECT_EQ(m.bytes(), bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % TableMemory::kAlignment, 0u) << bytes;
    EXPECT_TRUE(AllZero(m)) << bytes;
    std::memset(m.data(), 0xab, bytes);  // writable end to end
  }
  EXPECT_EQ(TableMemory().data(), nullptr);
}

// Huge pages can back only whole, aligned 2 MiB ranges of a mapping.
TEST(TableMemoryTest, LargeTablesStartOnAHugePageBoundary) {
  for (size_t bytes : {size_t{2 * 1024 * 1024}, size_t{5 * 1024 * 1024 + 4321}, size_t{64 * 1024 * 1024}}) {
    TableMemory m(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % (2 * 1024 * 1024), 0u) << bytes;
    EXPECT_TRUE(AllZero(m)) << bytes;
    std::memset(m.data(), 0xcd, bytes);  // the last byte is mapped too
  }
}

// A mapping grows where it is, up to its reservation, keeping its contents
// and zeroing the new part; memory from the heap never extends.
TEST(TableMemoryTest, AMappingExtendsInPlaceWithinItsReservation) {
  for (size_t bytes : {size_t{64 * 1024}, size_t{1024 * 1024 + 384}, size_t{3 * 1024 * 1024}}) {
    TableMemory m(bytes);
    void* const data = m.data();
    std::memset(data, 0x5a, bytes);
    ASSERT_TRUE(m.CanExtend(bytes * 4));
    EXPECT_FALSE(m.CanExtend(bytes * 4 + 64 * 1024));
    m.Extend(bytes * 3);
    EXPECT_EQ(m.data(), data);
    EXPECT_EQ(m.bytes(), bytes * 3);
    const auto* p = static_cast<const unsigned char*>(m.data());
    for (size_t i = 0; i < bytes * 3; i += 512) ASSERT_EQ(p[i], i < bytes ? 0x5a : 0) << bytes << " at " << i;
    std::memset(m.data(), 0x33, bytes * 3);  // writable end to end
  }
  TableMemory small(4096);
  EXPECT_FALSE(small.CanExtend(8192));
  EXPECT_FALSE(TableMemory().CanExtend(128));
}

// A mapping's reservation is address space only, and all of it goes with
// the memory, extended or not.
TEST(TableMemoryTest, AMappingReservesAddressSpaceAndFreesAllOfIt) {
  constexpr size_t kBytes = 64 * 1024 * 1024;
  const size_t before_rss = RssBytes(), before_mapped = MappedBytes();
  {
    TableMemory m(kBytes);
    EXPECT_GE(MappedBytes(), before_mapped + kBytes * 4);
    EXPECT_LT(RssBytes(), before_rss + kBytes * 3 / 2);  // the reservation is not resident
    m.Extend(kBytes * 2);
  }
  EXPECT_LT(MappedBytes(), before_mapped + kBytes / 2);
}

TEST(TableMemoryTest, MoveHandsOverTheMemory) {
  TableMemory a(1024 * 1024);
  void* p = a.data();
  TableMemory b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): documented state
  TableMemory c(256);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.bytes(), 1024u * 1024u);
}

// What the class is for: a large table's memory leaves the resident set when
// the table goes (a heap block would stay as a free hole).
TEST(TableMemoryTest, FreeingALargeTableGivesItsPagesBack) {
  constexpr size_t kBytes = 64 * 1024 * 1024;
  const size_t before = RssBytes();
  size_t during = 0;
  {
    TableMemory m(kBytes);
    std::memset(m.data(), 1, kBytes);
    during = RssBytes();
    EXPECT_GE(during, before + kBytes * 9 / 10);
  }
  // At least 90 % of the table's pages leave at once. (Measured against the
  // peak rather than the start: the rest of the process, e.g. gRPC's threads
  // under ASan, may grow by a few MiB meanwhile.)
  EXPECT_LT(RssBytes(), during - kBytes * 9 / 10);
}

}  // namespace
}  // namespace kvindex
