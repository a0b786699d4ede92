#include "core/ingest/worker_capacity.h"

#include "gtest/gtest.h"

namespace kvindex {
namespace {

TEST(WorkerCapacityTest, OpenFilesNeededAndWorkersThatFitAgree) {
  constexpr size_t kReplays = 512;
  const size_t besides = kFilesBesidesWorkers + kReplays * kFilesPerReplay;
  EXPECT_EQ(OpenFilesNeeded(10000, kReplays), 10000 * kFilesPerWorker + besides);
  EXPECT_EQ(OpenFilesNeeded(10000, 0), 10000 * kFilesPerWorker + kFilesBesidesWorkers);
  EXPECT_EQ(WorkersThatFit(OpenFilesNeeded(10000, kReplays), kReplays), 10000u);
  EXPECT_EQ(WorkersThatFit(OpenFilesNeeded(10000, kReplays) - 1, kReplays), 9999u);
  EXPECT_EQ(WorkersThatFit(20000, kReplays), (20000 - besides) / kFilesPerWorker);
  EXPECT_EQ(WorkersThatFit(100, kReplays), 0u);
  EXPECT_EQ(WorkerSocketsThatFit(20000, kReplays), 20000 - besides);
  EXPECT_EQ(WorkerSocketsThatFit(100, kReplays), 0u);
}

TEST(WorkerCapacityTest, ZeroMqSocketsCoverEveryWorkerAndReplayWithinZeroMqsLimit) {
  zmq::context_t context(1);
  EXPECT_EQ(MaxSockets(context, 100, 10), static_cast<int>(100 * kSocketsPerWorker + 10 * kSocketsPerReplay + 64));
  EXPECT_LE(MaxSockets(context, 100000000, 512), std::max(1024, context.get(zmq::ctxopt::socket_limit)));
}

}  // namespace
}  // namespace kvindex
