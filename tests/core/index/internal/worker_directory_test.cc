#include "core/index/internal/worker_directory.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;

class WorkerDirectoryTest : public ::testing::Test {
 protected:
  std::shared_ptr<WorkerBlocks> Get(const WorkerKey& key) {
    return directory_.FindOrCreate(key, [&](uint32_t id) {
      ++created_;
      return std::make_shared<WorkerBlocks>(id, key, WorkerBlocks::Shared{table_, contexts_, media_, counters_});
    });
  }

  // Stores `n` blocks (no tokens needed: nothing matches them) on `w`.
  void Fill(WorkerBlocks& w, uint64_t first, size_t n) {
    BlockStored s;
    s.block_size = 1;
    for (size_t i = 0; i < n; ++i) {
      s.block_hashes.push_back(first + i);
      s.token_ids.push_back(static_cast<uint32_t>(first + i));
    }
    EventBatch batch;
    batch.events.push_back(std::move(s));
    ASSERT_EQ(w.Apply({"llama", ""}, batch, 0).blocks_stored, n);
  }

  MediumTable media_;
  BlockTable table_{4};
  ContextRegistry contexts_;
  IndexCounters counters_;
  WorkerDirectory directory_;
  int created_ = 0;
};

TEST_F(WorkerDirectoryTest, IdsAreGivenInOrderAndNeverReused) {
  EXPECT_EQ(Get({"ns/a", 0})->id(), 0u);
  EXPECT_EQ(Get({"ns/a", 1})->id(), 1u);
  EXPECT_EQ(Get({"ns/a", 0})->id(), 0u);  // found, not created
  EXPECT_EQ(created_, 2);
  EXPECT_EQ(directory_.Find({"ns/b", 0}), nullptr);

  const std::shared_ptr<WorkerBlocks> removed = directory_.Remove({"ns/a", 0});
  ASSERT_NE(removed, nullptr);
  EXPECT_EQ(removed->key(), (WorkerKey{"ns/a", 0}));
  EXPECT_EQ(directory_.Find({"ns/a", 0}), nullptr);
  EXPECT_EQ(directory_.Remove({"ns/a", 0}), nullptr);
  EXPECT_EQ(Get({"ns/a", 0})->id(), 2u);
}

TEST_F(WorkerDirectoryTest, WorkersByPod) {
  Get({"ns/b", 1});
  Get({"ns/a", 0});
  Get({"ns/b", 0});
  Get({"ns/c", 0});
  EXPECT_THAT(directory_.KeysOfPod("ns/b"), ElementsAre(WorkerKey{"ns/b", 1}, WorkerKey{"ns/b", 0}));
  EXPECT_THAT(directory_.KeysOfPod("ns/x"), IsEmpty());
  const std::vector<std::string> pods{"ns/c", "ns/b", "ns/x", "ns/c"};
  EXPECT_THAT(directory_.IdsOfPods(pods), ElementsAre(0u, 2u, 3u, 3u));
  ASSERT_NE(directory_.Remove({"ns/b", 1}), nullptr);
  ASSERT_NE(directory_.Remove({"ns/b", 0}), nullptr);
  EXPECT_THAT(directory_.KeysOfPod("ns/b"), IsEmpty());
  EXPECT_THAT(directory_.IdsOfPods(pods), ElementsAre(3u, 3u));
  EXPECT_EQ(directory_.All().size(), 2u);
}

TEST_F(WorkerDirectoryTest, ResolveSkipsIdsNoLongerKnown) {
  Get({"ns/a", 0});
  Get({"ns/b", 0});
  Get({"ns/c", 0});
  ASSERT_NE(directory_.Remove({"ns/b", 0}), nullptr);
  std::vector<std::pair<size_t, std::string>> seen;
  const std::vector<uint32_t> ids{2, 1, 0, 9};
  directory_.Resolve(ids, [&](size_t i, const WorkerBlocks& w) { seen.emplace_back(i, w.key().pod); });
  EXPECT_THAT(seen, ElementsAre(Pair(0u, "ns/c"), Pair(2u, "ns/a")));
}

TEST_F(WorkerDirectoryTest, LargestHoldsTheMostBlocks) {
  std::shared_ptr<WorkerBlocks> a = Get({"ns/a", 0});
  std::shared_ptr<WorkerBlocks> b = Get({"ns/b", 0});
  EXPECT_EQ(directory_.Largest(), nullptr);  // nobody holds a block
  Fill(*a, 100, 2);
  Fill(*b, 200, 3);
  EXPECT_EQ(directory_.Largest(), b);
  ASSERT_NE(directory_.Remove({"ns/b", 0}), nullptr);
  EXPECT_EQ(directory_.Largest(), a);
}

}  // namespace
}  // namespace kvindex
