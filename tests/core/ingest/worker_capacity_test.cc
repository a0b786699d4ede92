#include "core/ingest/worker_capacity.h"

#include "gtest/gtest.h"

namespace kvindex {
namespace {

TEST(WorkerCapacityTest, OpenFilesNeededAndWorkersThatFitAgree) {
  EXPECT_EQ(OpenFilesNeeded(10000), 10000 * kFilesPerWorker + kFilesBesidesWorkers);
  EXPECT_EQ(WorkersThatFit(OpenFilesNeeded(10000)), 10000u);
  EXPECT_EQ(WorkersThatFit(OpenFilesNeeded(10000) - 1), 9999u);
  EXPECT_EQ(WorkersThatFit(20000), (20000 - kFilesBesidesWorkers) / kFilesPerWorker);
  EXPECT_EQ(WorkersThatFit(100), 0u);
  EXPECT_EQ(WorkerSocketsThatFit(20000), 20000 - kFilesBesidesWorkers);
  EXPECT_EQ(WorkerSocketsThatFit(100), 0u);
}

TEST(WorkerCapacityTest, ZeroMqSocketsCoverEveryWorkerWithinZeroMqsLimit) {
  zmq::context_t context(1);
  EXPECT_EQ(MaxSockets(context, 100), static_cast<int>(100 * kSocketsPerWorker + 64));
  EXPECT_LE(MaxSockets(context, 100000000), std::max(1024, context.get(zmq::ctxopt::socket_limit)));
}

}  // namespace
}  // namespace kvindex
