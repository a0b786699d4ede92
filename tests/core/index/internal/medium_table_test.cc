// MediumTable: GPU and CPU are bits 0 and 1, the next four names take bits
// 2..5 in order of arrival, every name beyond them is "OTHER" (bit 6), and
// concurrent registration gives every caller the same bit for a name.

#include "core/index/internal/medium_table.h"

#include <bit>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

constexpr int kOtherBit = kMaxMedia - 1;

TEST(MediumTableTest, GpuAndCpuArePreassignedAndNoMediumIsGpu) {
  MediumTable table;
  EXPECT_EQ(table.BitOf(std::nullopt), MediumMask{1});
  EXPECT_EQ(table.BitOf("GPU"), MediumMask{1});
  EXPECT_EQ(table.BitOf("CPU"), MediumMask{2});
  EXPECT_EQ(table.Find("GPU"), 0);
  EXPECT_EQ(table.Find("CPU"), 1);
  EXPECT_EQ(table.Find("OTHER"), kOtherBit);
  EXPECT_EQ(table.Find("gpu"), std::nullopt) << "names are case-sensitive";
  EXPECT_EQ(table.Name(0), "GPU");
  EXPECT_EQ(table.Name(1), "CPU");
  EXPECT_EQ(table.Name(kOtherBit), "OTHER");
  EXPECT_EQ(table.Name(2), "");
}

TEST(MediumTableTest, NamesBeyondCapacityOverflowToOther) {
  MediumTable table;
  const std::vector<std::string> named = {"NVME", "DISK", "REMOTE", "LMCACHE"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(table.BitOf(named[i]), MediumMask(1u << (2 + i))) << named[i];
    EXPECT_EQ(table.Name(2 + i), named[i]);
  }
  EXPECT_EQ(table.BitOf("NVME"), MediumMask{1u << 2}) << "a known name keeps its bit";

  // The table is full: every further name is OTHER, and is not registered.
  for (const char* overflow : {"S3", "TAPE", "S3", "x"}) {
    EXPECT_EQ(table.BitOf(std::string(overflow)), MediumMask(1u << kOtherBit)) << overflow;
    EXPECT_EQ(table.Find(overflow), std::nullopt) << overflow;
  }
  // An engine naming "OTHER" itself shares that bit; GPU and CPU still work.
  EXPECT_EQ(table.BitOf("OTHER"), MediumMask(1u << kOtherBit));
  EXPECT_EQ(table.BitOf("GPU"), MediumMask{1});
  EXPECT_EQ(table.BitOf("CPU"), MediumMask{2});
  for (int bit = 0; bit < kMaxMedia; ++bit) EXPECT_NE(table.Name(bit), "") << bit;
  // The eighth bit (the eviction mark's) is never handed out.
  EXPECT_LT(kOtherBit, 7);
}

TEST(MediumTableTest, OtherRegisteredBeforeTheTableFillsStillUsesItsOwnBit) {
  MediumTable table;
  EXPECT_EQ(table.BitOf("OTHER"), MediumMask(1u << kOtherBit));
  EXPECT_EQ(table.BitOf("NVME"), MediumMask{1u << 2}) << "OTHER took no free bit";
}

TEST(MediumTableTest, ConcurrentRegistrationAgreesOnEveryName) {
  MediumTable table;
  constexpr int kThreads = 8;
  // 10 new names raced for 4 bits: each name gets one bit for everyone, 4 of
  // them a bit of their own in 2..5, the other 6 OTHER.
  std::vector<std::vector<MediumMask>> seen(kThreads, std::vector<MediumMask>(10));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 100; ++round) {
        for (int i = 0; i < 10; ++i) {
          const int n = (i + t) % 10;
          const MediumMask bit = table.BitOf(absl::StrCat("tier-", n));
          if (round == 0) {
            seen[t][n] = bit;
          } else if (seen[t][n] != bit) {
            seen[t][n] = 0;  // a name changed bits: fails below
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  int own = 0;
  int other = 0;
  MediumMask own_bits = 0;
  for (int n = 0; n < 10; ++n) {
    for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t][n], seen[0][n]) << "tier-" << n << " thread " << t;
    const MediumMask bit = seen[0][n];
    if (bit == MediumMask(1u << kOtherBit)) {
      ++other;
      EXPECT_EQ(table.Find(absl::StrCat("tier-", n)), std::nullopt);
    } else {
      ++own;
      EXPECT_EQ(own_bits & bit, 0) << "two names share bit " << int{bit};
      EXPECT_GE(bit, MediumMask{1u << 2});
      EXPECT_LE(bit, MediumMask{1u << 5});
      own_bits |= bit;
    }
  }
  EXPECT_EQ(own, 4);
  EXPECT_EQ(other, 6);
  EXPECT_EQ(own_bits, MediumMask{0b111100});
}

TEST(MediumTableTest, LocalityAndOwnershipNameTheirOwnTier) {
  MediumTable table;
  const std::optional<std::string> cpu = "CPU", remote = "REMOTE", local = "LOCAL", fs = "fs";
  EXPECT_EQ(table.BitOf(cpu, local, std::nullopt), table.BitOf(cpu));  // LOCAL is the medium itself
  const MediumMask cpu_remote = table.BitOf(cpu, remote, std::nullopt);
  const MediumMask cpu_remote_fs = table.BitOf(cpu, remote, fs);
  EXPECT_NE(cpu_remote, table.BitOf(cpu));
  EXPECT_NE(cpu_remote_fs, cpu_remote);
  EXPECT_EQ(table.Find("CPU/REMOTE"), std::countr_zero(cpu_remote));
  EXPECT_EQ(table.Find("CPU/REMOTE@fs"), std::countr_zero(cpu_remote_fs));
  EXPECT_EQ(table.Find("GPU@fs"), std::nullopt);
  EXPECT_EQ(table.BitOf(std::nullopt, std::nullopt, fs), table.BitOf(std::string("GPU@fs")));
}

TEST(MediumTableTest, AMediumsWeightAppliesToEveryLocalityAndRemoteOverridesIt) {
  const absl::flat_hash_map<std::string, double> weights = {{"CPU", 0.5}, {"CPU/REMOTE", 0.2}, {"DISK", 0.1}};
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("CPU", weights), 0.5);
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("CPU@fs", weights), 0.5);
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("CPU/REMOTE", weights), 0.2);
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("CPU/REMOTE@fs", weights), 0.2);
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("DISK/REMOTE", weights), 0.1);  // no DISK/REMOTE key: DISK's
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("GPU", weights), 1.0);
  EXPECT_DOUBLE_EQ(MediumTable::WeightOf("CPU_PINNED", weights), 1.0);  // SGLang's medium, a name of its own
}

}  // namespace
}  // namespace kvindex
