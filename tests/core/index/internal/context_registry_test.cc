#include "core/index/internal/context_registry.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(ContextRegistryTest, BlockSizesAreAscendingPerModelAndLora) {
  ContextRegistry registry;
  WorkerLock worker;
  absl::MutexLock hold(&worker.mu);
  registry.Use({"llama", "", 32}, worker);
  registry.Use({"llama", "", 16}, worker);
  registry.Use({"llama", "sql", 8}, worker);
  registry.Use({"qwen", "", 64}, worker);
  EXPECT_THAT(registry.BlockSizes("llama", ""), ElementsAre(16u, 32u));
  EXPECT_THAT(registry.BlockSizes("llama", "sql"), ElementsAre(8u));
  EXPECT_THAT(registry.BlockSizes("qwen", ""), ElementsAre(64u));
  EXPECT_THAT(registry.BlockSizes("qwen", "sql"), IsEmpty());
  EXPECT_THAT(registry.BlockSizes("mistral", ""), IsEmpty());
}

// A context stays while any worker uses it, and is forgotten with its last user.
TEST(ContextRegistryTest, AContextGoesWithItsLastWorker) {
  ContextRegistry registry;
  WorkerLock a, b;
  const ContextSet a_uses{{"llama", "", 16}, {"llama", "", 32}};
  const ContextSet b_uses{{"llama", "", 16}};
  {
    absl::MutexLock hold(&a.mu);
    for (const ContextKey& c : a_uses) registry.Use(c, a);
  }
  {
    absl::MutexLock hold(&b.mu);
    for (const ContextKey& c : b_uses) registry.Use(c, b);
  }
  {
    absl::MutexLock hold(&a.mu);
    registry.Release(a_uses, a);
  }
  EXPECT_THAT(registry.BlockSizes("llama", ""), ElementsAre(16u));
  {
    absl::MutexLock hold(&b.mu);
    registry.Release(b_uses, b);
  }
  EXPECT_THAT(registry.BlockSizes("llama", ""), IsEmpty());
}

TEST(ContextRegistryTest, ReleasingAnUnknownContextChangesNothing) {
  ContextRegistry registry;
  WorkerLock worker;
  absl::MutexLock hold(&worker.mu);
  registry.Use({"llama", "", 16}, worker);
  registry.Release({{"llama", "", 32}, {"qwen", "", 16}}, worker);
  EXPECT_THAT(registry.BlockSizes("llama", ""), ElementsAre(16u));
}

}  // namespace
}  // namespace kvindex
