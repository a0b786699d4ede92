// Snapshots of the index: a round trip restores the workers, their cursors
// and the pods, and Match answers as before; every damaged file (truncated at
// any byte, any byte flipped, another version, other hashing flags, records
// that do not decode behind a valid checksum) is refused with its outcome and
// leaves the index untouched; a write that fails or is abandoned leaves the
// previous snapshot in place.

#include "core/snapshot/index_snapshot.h"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/index/block_hash.h"
#include "core/snapshot/snapshot_file.h"
#include "core/snapshot/snapshot_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kvindex-snapshot-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(absl::StrCat("rm -rf '", path_, "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// `body` behind a valid header of `version`.
std::string WithHeader(const std::string& body, uint32_t version = kSnapshotFormatVersion) {
  return EncodeSnapshotHeader(SnapshotHeader{version, body.size(), XXH3_64bits(body.data(), body.size())}) + body;
}

std::vector<uint32_t> Tokens(uint32_t n, uint32_t first) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

Pod MakePod(std::string name, uint32_t dp_size = 1) {
  Pod pod;
  pod.ns = "ns";
  pod.name = std::move(name);
  pod.ip = "10.0.0.1";
  pod.phase = "Running";
  pod.labels = {{"model.aibrix.ai/name", "llama"}, {"model.aibrix.ai/kv-events-enabled", "true"}, {"x", "y"}};
  pod.annotations = {{"a", "b"}};
  pod.replay_port = 0;
  pod.kv_events_enabled = true;
  pod.dp_size = dp_size;
  pod.topic = "kv";
  return pod;
}

// Worker `w` stores blocks of 4 tokens: `n` blocks of the chain starting at token `first`, at `seq`.
void Store(PrefixIndex& index, const WorkerKey& w, uint32_t first, size_t n, uint64_t seq,
           std::optional<std::string> medium = std::nullopt) {
  BlockStored s;
  for (size_t i = 0; i < n; ++i) s.block_hashes.push_back(w.dp_rank * 1000000 + first * 100 + i + 1);
  s.token_ids = Tokens(static_cast<uint32_t>(4 * n), first);
  s.block_size = 4;
  s.medium = std::move(medium);
  EventBatch b;
  b.ts = 1700000000 + seq;
  b.events.push_back(std::move(s));
  (void)index.Apply(w, WorkerContext{"llama", ""}, b, BatchCursor{seq, seq * 31, seq != 3});
}

const WorkerKey kA0{"ns/a", 0};
const WorkerKey kA1{"ns/a", 1};
const WorkerKey kB0{"ns/b", 0};

std::string Answer(const PrefixIndex& index, uint32_t first, uint32_t blocks) {
  const std::vector<uint32_t> tokens = Tokens(4 * blocks, first);
  absl::StatusOr<MatchResult> r = index.Match(MatchQuery{.model = "llama", .token_ids = tokens});
  if (!r.ok()) return r.status().ToString();
  std::string out;
  for (const WorkerMatch& m : r->workers) {
    absl::StrAppend(&out, WorkerKeyString(m.worker), ":", m.matched_blocks, ":", m.score, " ");
    for (const auto& [medium, n] : m.blocks_by_medium) absl::StrAppend(&out, medium, "=", n, " ");
  }
  return out;
}

// A small index (three workers, two pods) written to `dir`.
void WriteSmall(PrefixIndex& index, const std::string& dir, std::string_view flags = "") {
  Store(index, kA0, 1, 3, 5);
  Store(index, kA0, 1, 2, 6, "CPU");
  Store(index, kA1, 1, 2, 3);
  Store(index, kB0, 50, 1, 9);
  absl::StatusOr<SnapshotWriteStats> stats =
      WriteIndexSnapshot(index, {MakePod("a", 2), MakePod("b")}, {.dir = dir, .hashing_flags = std::string(flags)});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->workers, 3u);
  EXPECT_EQ(stats->pods, 2u);
  EXPECT_EQ(stats->entries, 6u);
  EXPECT_EQ(stats->bytes, ReadAll(SnapshotPath(dir)).size());
}

TEST(IndexSnapshotTest, ARoundTripRestoresWorkersCursorsAndPods) {
  TempDir dir;
  PrefixIndex original;
  WriteSmall(original, dir.path());
  EXPECT_FALSE(access((SnapshotPath(dir.path()) + ".tmp").c_str(), F_OK) == 0);  // renamed away

  PrefixIndex restored;
  SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &restored);
  ASSERT_EQ(load.outcome, SnapshotLoadOutcome::kLoaded) << load.status;
  EXPECT_TRUE(load.status.ok());
  EXPECT_EQ(load.pods, (std::vector<Pod>{MakePod("a", 2), MakePod("b")}));
  ASSERT_EQ(load.resumes.size(), 3u);
  EXPECT_EQ(load.resumes[0].worker, kA0);
  EXPECT_EQ(load.resumes[0].cursor, (BatchCursor{6, 6 * 31, true}));
  EXPECT_EQ(load.resumes[0].pod, MakePod("a", 2));
  EXPECT_EQ(load.resumes[1].worker, kA1);
  EXPECT_EQ(load.resumes[1].cursor, (BatchCursor{3, 3 * 31, false}));
  EXPECT_EQ(load.resumes[2].worker, kB0);
  EXPECT_EQ(load.workers, 3u);
  EXPECT_EQ(load.entries, 6u);
  EXPECT_EQ(load.skipped, 0u);
  EXPECT_EQ(restored.Stats().entries, original.Stats().entries);
  for (uint32_t first : {1u, 50u}) {
    for (uint32_t blocks = 1; blocks <= 4; ++blocks) {
      EXPECT_EQ(Answer(restored, first, blocks), Answer(original, first, blocks)) << first << " " << blocks;
    }
  }
  EXPECT_THAT(Answer(restored, 1, 3), HasSubstr("CPU=2"));
}

TEST(IndexSnapshotTest, WorkersWithoutACursorOrAPodAreNotRestored) {
  TempDir dir;
  PrefixIndex original;
  Store(original, kA0, 1, 3, 5);
  EventBatch b;
  b.events.push_back(BlockStored{.block_hashes = {7}, .token_ids = Tokens(4, 1), .block_size = 4});
  (void)original.Apply(kB0, WorkerContext{"llama", ""}, b);  // no cursor: not written
  Store(original, kA1, 1, 2, 3);                                // rank 1 of a pod saved with dp_size 1: skipped
  ASSERT_TRUE(WriteIndexSnapshot(original, {MakePod("a", 1)}, {.dir = dir.path()}).ok());
  PrefixIndex restored;
  SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &restored);
  ASSERT_EQ(load.outcome, SnapshotLoadOutcome::kLoaded) << load.status;
  EXPECT_EQ(restored.WorkerKeys(), std::vector<WorkerKey>{kA0});
  EXPECT_EQ(load.skipped, 1u);
}

TEST(IndexSnapshotTest, NoSnapshotIsAColdStart) {
  TempDir dir;
  PrefixIndex index;
  SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &index);
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kNone);
  EXPECT_EQ(load.status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SnapshotLoadOutcomeName(load.outcome), "none");
}

TEST(IndexSnapshotTest, AnUnreadableDirectoryIsRefused) {
  TempDir dir;
  WriteAll(dir.path() + "/file", "x");
  PrefixIndex index;
  SnapshotLoad load = LoadIndexSnapshot(dir.path() + "/file", "", &index);  // ENOTDIR
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kUnreadable) << load.status;
}

TEST(IndexSnapshotTest, ASnapshotTruncatedAtAnyByteIsRefusedAndLoadsNothing) {
  TempDir dir;
  PrefixIndex original;
  WriteSmall(original, dir.path());
  const std::string file = ReadAll(SnapshotPath(dir.path()));
  for (size_t size = 0; size < file.size(); ++size) {
    WriteAll(SnapshotPath(dir.path()), file.substr(0, size));
    PrefixIndex index;
    SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &index);
    ASSERT_EQ(load.outcome, SnapshotLoadOutcome::kCorrupt) << size << ": " << load.status;
    EXPECT_EQ(load.status.code(), absl::StatusCode::kDataLoss) << size;
    ASSERT_TRUE(index.WorkerKeys().empty()) << size;
  }
  WriteAll(SnapshotPath(dir.path()), file + "x");  // and one byte too many
  PrefixIndex index;
  EXPECT_EQ(LoadIndexSnapshot(dir.path(), "", &index).outcome, SnapshotLoadOutcome::kCorrupt);
}

TEST(IndexSnapshotTest, AnyFlippedByteIsRefusedAndLoadsNothing) {
  TempDir dir;
  PrefixIndex original;
  WriteSmall(original, dir.path());
  const std::string file = ReadAll(SnapshotPath(dir.path()));
  for (size_t at = 0; at < file.size(); ++at) {
    for (uint8_t mask : {0x01, 0x80}) {
      std::string flipped = file;
      flipped[at] = static_cast<char>(flipped[at] ^ mask);
      WriteAll(SnapshotPath(dir.path()), flipped);
      PrefixIndex index;
      SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &index);
      // The version field (bytes 8..11) names another version; anything else is corrupt.
      const SnapshotLoadOutcome expected =
          at >= 8 && at < 12 ? SnapshotLoadOutcome::kVersion : SnapshotLoadOutcome::kCorrupt;
      ASSERT_EQ(load.outcome, expected) << at << ": " << load.status;
      ASSERT_TRUE(index.WorkerKeys().empty()) << at;
    }
  }
}

TEST(IndexSnapshotTest, AnotherFormatVersionIsRefused) {
  TempDir dir;
  PrefixIndex original;
  WriteSmall(original, dir.path());
  const std::string body = ReadAll(SnapshotPath(dir.path())).substr(kSnapshotHeaderBytes);
  WriteAll(SnapshotPath(dir.path()), WithHeader(body, kSnapshotFormatVersion + 1));
  PrefixIndex index;
  SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &index);
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kVersion);
  EXPECT_EQ(load.status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(load.status.message(), "snapshot format version 2, this build reads 1");
  EXPECT_TRUE(index.WorkerKeys().empty());
}

TEST(IndexSnapshotTest, ASnapshotOfOtherHashingFlagsIsRefused) {
  TempDir dir;
  PrefixIndex original;
  WriteSmall(original, dir.path(), "--block_hash_seed=1");
  PrefixIndex index;
  SnapshotLoad load = LoadIndexSnapshot(dir.path(), "--block_hash_seed=2", &index);
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kHashing);
  EXPECT_EQ(load.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(load.status.message()), HasSubstr("flags: --block_hash_seed=1"));
  EXPECT_TRUE(index.WorkerKeys().empty());
  EXPECT_EQ(LoadIndexSnapshot(dir.path(), "--block_hash_seed=1", &index).outcome, SnapshotLoadOutcome::kLoaded);
}

TEST(IndexSnapshotTest, TheFingerprintFollowsTheIndexHash) {
  EXPECT_EQ(HashingFingerprint("x"), HashingFingerprint("x"));
  EXPECT_NE(HashingFingerprint("x"), HashingFingerprint("y"));
  EXPECT_THAT(HashingFingerprint(""),
              HasSubstr(absl::StrCat(absl::Hex(ContextSeed("kvindex-probe", "lora", 16), absl::kZeroPad16))));
}

// Behind a valid checksum (a bug, or a file made by hand): a record that does
// not decode in the middle undoes the workers imported before it.
TEST(IndexSnapshotTest, ABadRecordBehindAValidChecksumUndoesTheWorkersBeforeIt) {
  TempDir dir;
  PrefixIndex original;
  WriteSmall(original, dir.path());
  const std::string body = ReadAll(SnapshotPath(dir.path())).substr(kSnapshotHeaderBytes);
  for (const std::string& bad : {body.substr(0, body.size() - 1) + "X",  // no end record
                                 body + "E",                             // bytes after it
                                 body.substr(0, body.size() - 10) + std::string(9, '\xff') + "E"}) {
    WriteAll(SnapshotPath(dir.path()), WithHeader(bad));
    PrefixIndex index;
    SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &index);
    EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kCorrupt) << load.status;
    EXPECT_TRUE(index.WorkerKeys().empty());
  }
  // A worker the index already holds: refused whole, the index keeps its own.
  WriteAll(SnapshotPath(dir.path()), WithHeader(body));
  PrefixIndex index;
  Store(index, kB0, 60, 2, 1);
  SnapshotLoad load = LoadIndexSnapshot(dir.path(), "", &index);
  EXPECT_EQ(load.outcome, SnapshotLoadOutcome::kCorrupt);
  EXPECT_THAT(std::string(load.status.message()), HasSubstr("ns/b#0 cannot be imported: worker ns/b#0 already exists"));
  EXPECT_EQ(index.WorkerKeys(), std::vector<WorkerKey>{kB0});
  EXPECT_EQ(index.Stats().entries, 2u);
}

TEST(IndexSnapshotTest, AFailedOrAbandonedWriteLeavesThePreviousSnapshot) {
  TempDir dir;
  PrefixIndex index;
  WriteSmall(index, dir.path());
  const std::string before = ReadAll(SnapshotPath(dir.path()));
  Store(index, kB0, 70, 2, 10);
  absl::StatusOr<SnapshotWriteStats> late =
      WriteIndexSnapshot(index, {}, {.dir = dir.path(), .deadline = absl::Now() - absl::Seconds(1)});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ReadAll(SnapshotPath(dir.path())), before);
  EXPECT_FALSE(access((SnapshotPath(dir.path()) + ".tmp").c_str(), F_OK) == 0);
  absl::StatusOr<SnapshotWriteStats> nowhere = WriteIndexSnapshot(index, {}, {.dir = dir.path() + "/missing"});
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(nowhere.status().message()), HasSubstr("cannot create"));
}

}  // namespace
}  // namespace kvindex
