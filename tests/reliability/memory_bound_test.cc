// Memory bound: engines flooding unique blocks (every prompt new, engine caches
// that never evict) cannot push kvindex-server's memory over its configured
// index budget (--index_memory_mb): the index evicts, counts the evictions and
// keeps serving. The server's RSS is sampled from /proc.
//  - At a rate the index absorbs (~130k blocks/s), RSS stays within baseline +
//    budget + 32 MiB.
//  - Beyond it (engines as fast as they go), what is in flight is bounded too:
//    ZeroMQ's receive queues hold at most their high-water mark (10000
//    messages per worker; more is dropped and counted as gaps), so RSS stays
//    within baseline + budget + 128 MiB instead of growing with the flood.

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kvindex_client.h"
#include "core/util/resident_memory.h"
#include "gtest/gtest.h"
#include "server/memory_budget.h"
#include "tests/reliability/sim_process.h"
#include "tests/server/server_process.h"
#include "tests/testing/clients.h"
#include "tests/testing/pods.h"
#include "tests/testing/sanitized.h"

namespace kvindex::testing {
namespace {

// Sanitizers keep shadow memory and quarantines: RSS says nothing there.
using ::kvindex::testutil::kSanitized;

// Sanitized builds ingest 5-20x slower: a smaller budget is reached as surely.
constexpr uint64_t kBudgetMb = kSanitized ? 4 : 48;
constexpr uint64_t kMiB = 1 << 20;

struct FloodResult {
  uint64_t baseline = 0;
  std::vector<uint64_t> rss;  // one sample per second
  v1::GetStatsResponse stats;
};

// The index's entry cap under the budget.
uint64_t Cap() { return WithMemoryBudget(IndexOptions{}, kBudgetMb * kMiB).max_entries; }

// Longest wait for a flood to go as far past the cap as asked; beyond it the
// flood is reported as stuck.
constexpr absl::Duration kFloodDeadline = absl::Minutes(5);

// Runs two flooding engines at `rate` requests/s each (0: unbounded) against a
// server with the budget until the index has evicted `evictions` entries,
// sampling RSS (and the entries held) every second. How long a flood lasts is a
// count, not a time: a slow (loaded, sanitized) machine floods for longer, not
// less.
FloodResult Flood(const std::string& rate, uint64_t evictions) {
  FloodResult result;
  absl::StatusOr<ServerProcess> server = StartServerProcess({absl::StrCat("--index_memory_mb=", kBudgetMb)});
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return result;
  std::unique_ptr<client::KvIndexClient> client = testutil::Connect(server->address);
  if (client == nullptr) return result;
  EXPECT_TRUE(client->GetStats().ok());
  result.baseline = ResidentBytes(server->process->pid());

  // The sim binds ports the kernel picks and names them in its pods file
  // (written once they are bound); its truth file is too big to write here.
  absl::StatusOr<std::unique_ptr<SimProcess>> sim = SimProcess::Start(
      {"--pods=2", "--base_port=0", absl::StrCat("--rate=", rate), "--system_prompts=0", "--max_turns=1",
       "--turn_tokens=512", "--block_size=16", "--capacity_blocks=100000000", "--replay=false",
       "--truth_interval=1h", absl::StrCat("--duration=", absl::ToInt64Seconds(kFloodDeadline) + 60, "s"),
       "--keep_running", "--threads=1"},
      /*read_pods=*/false);
  EXPECT_TRUE(sim.ok()) << sim.status();
  if (!sim.ok()) return result;
  EXPECT_EQ((*sim)->pods().pods_size(), 2);
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client->SyncPods({testutil::SnapshotUpdate((*sim)->pods())});
  EXPECT_TRUE(acks.ok()) << acks.status();

  uint64_t max_entries = 0;
  const absl::Time deadline = absl::Now() + kFloodDeadline;
  for (bool flooded = false; !flooded;) {
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "the index evicted " << result.stats.evictions() << " of the " << evictions
                    << " entries waited for within " << kFloodDeadline << ": ingestion is stuck";
      break;
    }
    absl::SleepFor(absl::Seconds(1));
    result.rss.push_back(ResidentBytes(server->process->pid()));
    absl::StatusOr<v1::GetStatsResponse> stats = client->GetStats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (!stats.ok()) break;
    result.stats = *stats;
    max_entries = std::max(max_entries, stats->entries());
    flooded = stats->evictions() >= evictions;
  }
  result.stats.set_entries(max_entries);  // the largest seen

  v1::MatchRequest match;
  match.set_model("sim-model");
  for (int i = 0; i < 64; ++i) match.add_token_ids(i);
  EXPECT_TRUE(client->Match(match).ok()) << "the server keeps serving";

  std::string timeline;
  for (uint64_t r : result.rss) absl::StrAppend(&timeline, " ", r / kMiB);
  std::printf("rate %s, budget %llu MiB (cap %llu entries): most entries %llu, index %.1f MiB, %llu evictions, "
              "%llu gaps; RSS baseline %llu MiB, each second:%s\n",
              rate.c_str(), static_cast<unsigned long long>(kBudgetMb),
              static_cast<unsigned long long>(Cap()),
              static_cast<unsigned long long>(max_entries), result.stats.memory_bytes() / double(kMiB),
              static_cast<unsigned long long>(result.stats.evictions()),
              static_cast<unsigned long long>(result.stats.gaps()), static_cast<unsigned long long>(result.baseline / kMiB),
              timeline.c_str());
  return result;
}

void ExpectIndexWithinBudget(const FloodResult& r) {
  const uint64_t cap = Cap();
  // Workers apply in parallel; the global cap may be passed by a few entries
  // between an insert and its eviction.
  EXPECT_LE(r.stats.entries(), cap + cap / 100);
  EXPECT_LE(r.stats.memory_bytes(), kBudgetMb * kMiB) << "the index's own accounting exceeds the budget";
}

TEST(MemoryBoundTest, FloodTheIndexAbsorbsStaysWithinBaselinePlusBudget) {
  // Half a cap past it: 1.5 caps stored.
  const FloodResult r = Flood("1000", Cap() / 2);
  ExpectIndexWithinBudget(r);
  if (kSanitized || r.rss.empty()) return;
  const uint64_t peak = *std::max_element(r.rss.begin(), r.rss.end());
  EXPECT_LE(peak, r.baseline + kBudgetMb * kMiB + 32 * kMiB) << "peak RSS " << peak / kMiB << " MiB";
}

TEST(MemoryBoundTest, FloodBeyondWhatTheIndexAbsorbsStaysBounded) {
  // Three caps past it, so that the receive queues have long been full.
  const FloodResult r = Flood("0", 3 * Cap());
  ExpectIndexWithinBudget(r);
  if (kSanitized || r.rss.empty()) return;
  // In flight: ZeroMQ queues of at most 10000 messages (~2.5 KiB here) per
  // worker, the engines' unsent PUB queues' socket buffers; they fill and
  // drain (RSS goes up and down) but never hold more than that.
  const uint64_t peak = *std::max_element(r.rss.begin(), r.rss.end());
  EXPECT_LE(peak, r.baseline + kBudgetMb * kMiB + 128 * kMiB) << "peak RSS " << peak / kMiB << " MiB";
}

}  // namespace
}  // namespace kvindex::testing
