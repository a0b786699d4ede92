// The snapshot body cut in pieces (ExportIndexBody) and read back piece by
// piece (BodyImporter), as ExportIndex streams it to a bootstrapping peer:
// every piece within its bound, a worker larger than a piece carried across
// pieces, the same index restored whatever the piece size; a stream that
// breaks, lies about a record boundary or names other hashing leaves the
// index untouched.

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/snapshot/body_export.h"
#include "core/snapshot/body_import.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::HasSubstr;

struct Piece {
  std::string bytes;
  bool continues = false;
};

Pod MakePod(std::string name, uint32_t dp_size = 1) {
  Pod pod;
  pod.ns = "ns";
  pod.name = std::move(name);
  pod.ip = "10.0.0.1";
  pod.phase = "Running";
  pod.labels = {{"model.aibrix.ai/name", "llama"}, {"model.aibrix.ai/kv-events-enabled", "true"}};
  pod.dp_size = dp_size;
  return pod;
}

// Worker `w` stores `n` blocks of one chain (4 tokens each) starting at token `first`, at `seq`.
void Store(PrefixIndex& index, const WorkerKey& w, uint32_t first, size_t n, uint64_t seq, bool complete = true) {
  BlockStored s;
  for (size_t i = 0; i < n; ++i) s.block_hashes.push_back(w.dp_rank * 1000000 + first * 1000 + i + 1);
  for (uint32_t t = 0; t < 4 * n; ++t) s.token_ids.push_back(first + t);
  s.block_size = 4;
  EventBatch b;
  b.events.push_back(std::move(s));
  (void)index.Apply(w, WorkerContext{"llama", ""}, b, BatchCursor{seq, seq * 31, complete});
}

const WorkerKey kA0{"ns/a", 0};
const WorkerKey kA1{"ns/a", 1};
const WorkerKey kB0{"ns/b", 0};
const std::vector<Pod> kPods = {MakePod("a", 2), MakePod("b")};

// Three workers, one of them (a/0) much larger than the small pieces below.
void Fill(PrefixIndex& index) {
  Store(index, kA0, 1, 300, 5);
  Store(index, kA1, 1, 2, 3, /*complete=*/false);
  Store(index, kB0, 50, 1, 9);
}

// The worker as exported, its blocks and parents in hash order (a table's order is its own).
std::optional<WorkerSnapshot> Sorted(const PrefixIndex& index, const WorkerKey& w) {
  std::optional<WorkerSnapshot> s = index.ExportWorker(w);
  if (!s.has_value()) return s;
  for (GroupSnapshot& g : s->groups) {
    std::sort(g.blocks.begin(), g.blocks.end(),
              [](const SnapshotBlock& a, const SnapshotBlock& b) { return a.engine < b.engine; });
    std::sort(g.parents.begin(), g.parents.end());
  }
  return s;
}

std::vector<Piece> Export(const PrefixIndex& index, size_t max_piece) {
  std::vector<Piece> pieces;
  absl::StatusOr<SnapshotWriteStats> stats =
      ExportIndexBody(index, kPods, {.max_piece_bytes = max_piece}, [&](std::string_view bytes, bool continues) {
        pieces.push_back({std::string(bytes), continues});
        return absl::OkStatus();
      });
  EXPECT_TRUE(stats.ok()) << stats.status();
  return pieces;
}

TEST(BodyStreamTest, EveryPieceSizeRestoresTheSameIndex) {
  PrefixIndex original;
  Fill(original);
  for (size_t max_piece : {1u, 7u, 100u, 20000u, 1u << 20}) {
    const std::vector<Piece> pieces = Export(original, max_piece);
    ASSERT_FALSE(pieces.empty());
    EXPECT_FALSE(pieces.back().continues);
    bool carried = false;
    for (const Piece& p : pieces) {
      EXPECT_LE(p.bytes.size(), max_piece);
      carried |= p.continues;
    }
    EXPECT_EQ(carried, max_piece < 20000) << max_piece;  // a/0's record is about 10 KB, the others' far less
    PrefixIndex restored;
    BodyImporter importer("", &restored);
    for (const Piece& p : pieces) ASSERT_TRUE(importer.Add(p.bytes, p.continues)) << max_piece;
    SnapshotLoad load = importer.Finish();
    ASSERT_EQ(load.outcome, SnapshotLoadOutcome::kLoaded) << load.status;
    EXPECT_EQ(load.pods, kPods);
    ASSERT_EQ(load.resumes.size(), 3u);
    EXPECT_EQ(load.resumes[1].cursor, (BatchCursor{3, 3 * 31, false}));  // an incomplete worker stays so
    EXPECT_EQ(load.entries, 303u);
    for (const WorkerKey& w : {kA0, kA1, kB0}) EXPECT_EQ(Sorted(restored, w), Sorted(original, w));
  }
}

TEST(BodyStreamTest, AStreamThatEndsEarlyLeavesNothing) {
  PrefixIndex original;
  Fill(original);
  const std::vector<Piece> pieces = Export(original, 100);
  for (size_t n = 0; n < pieces.size(); ++n) {
    PrefixIndex index;
    {
      BodyImporter importer("", &index);
      for (size_t i = 0; i < n; ++i) ASSERT_TRUE(importer.Add(pieces[i].bytes, pieces[i].continues));
      if (n % 2 == 0) {
        SnapshotLoad load = importer.Finish();
        EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kCorrupt) << n;
        EXPECT_THAT(std::string(load.status.message()), HasSubstr("ends")) << n;
        EXPECT_TRUE(load.resumes.empty());
      }  // odd: abandoned without Finish (a broken stream)
    }
    EXPECT_TRUE(index.WorkerKeys().empty()) << n;
  }
}

TEST(BodyStreamTest, ABoundaryInsideARecordIsRefused) {
  PrefixIndex original;
  Fill(original);
  std::vector<Piece> pieces = Export(original, 100);
  size_t lied = 0;
  for (Piece& p : pieces) {
    if (p.continues) {
      p.continues = false;
      ++lied;
      break;
    }
  }
  ASSERT_EQ(lied, 1u);
  PrefixIndex index;
  BodyImporter importer("", &index);
  bool ok = true;
  for (const Piece& p : pieces) ok = ok && importer.Add(p.bytes, p.continues);
  EXPECT_FALSE(ok);
  SnapshotLoad load = importer.Finish();
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kCorrupt);
  EXPECT_TRUE(index.WorkerKeys().empty());
}

TEST(BodyStreamTest, OtherHashingIsRefused) {
  PrefixIndex original;
  Fill(original);
  PrefixIndex index;
  BodyImporter importer("other flags", &index);
  for (const Piece& p : Export(original, 1 << 20)) importer.Add(p.bytes, p.continues);
  SnapshotLoad load = importer.Finish();
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kHashing);
  EXPECT_EQ(load.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(index.WorkerKeys().empty());
}

TEST(BodyStreamTest, ASinkErrorStopsTheExport) {
  PrefixIndex original;
  Fill(original);
  int calls = 0;
  absl::StatusOr<SnapshotWriteStats> stats =
      ExportIndexBody(original, kPods, {.max_piece_bytes = 100}, [&](std::string_view, bool) {
        return ++calls == 3 ? absl::CancelledError("peer went away") : absl::OkStatus();
      });
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace kvindex
