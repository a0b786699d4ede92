#pragma once

// Snapshots of the whole index: what kvindex-server writes every
// --snapshot_interval (and at SIGTERM) and loads at start, so a restarted
// server knows the engines' caches at once and each worker resumes its
// engine's stream where the snapshot left it (README "Snapshots").
//
// A snapshot holds the pods (as the control plane last gave them) and, per
// worker with a cursor (core/index/worker_snapshot.h), its blocks and the
// last batch they include. It is a sequence of per-worker consistent cuts,
// not one global instant: each worker is copied as of one instant of its
// own (PrefixIndex::ExportWorker: in steps of its lock, each bounded to a few
// ms whatever the worker's size) and written before the next is copied, so
// ingestion of one worker waits at most one step at a time, Match never
// waits, and the memory the write needs is about one worker's. That is enough for a
// restart: workers are independent, and each resumes from its own cursor.
//
// Thread safety: WriteIndexSnapshot may run on any thread while the index is
// in use; at most one per directory at a time. LoadIndexSnapshot runs before
// anything else uses the workers it creates.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/pod.h"
#include "core/ingest/worker_resume.h"

namespace kvindex {

struct SnapshotWriteOptions {
  std::string dir;            // must exist
  std::string hashing_flags;  // see HashingFingerprint (snapshot_format.h)
  // Checked between workers: past it the write is abandoned (DEADLINE_EXCEEDED)
  // and the previous snapshot stays.
  absl::Time deadline = absl::InfiniteFuture();
};

struct SnapshotWriteStats {
  uint64_t bytes = 0;
  uint64_t pods = 0;
  uint64_t workers = 0;  // written: workers with a cursor
  uint64_t entries = 0;
  absl::Time created;                                     // when the write began
  absl::Duration duration;                                // the whole write, fsyncs included
  absl::Duration longest_pause = absl::ZeroDuration();    // the longest hold of one worker's lock by its copy
};

// Writes `pods` and every worker of `index` that has a cursor into
// options.dir, atomically (snapshot_file.h). A file system error (the
// previous snapshot stays), or DEADLINE_EXCEEDED.
[[nodiscard]] absl::StatusOr<SnapshotWriteStats> WriteIndexSnapshot(const PrefixIndex& index,
                                                                    const std::vector<Pod>& pods,
                                                                    const SnapshotWriteOptions& options);

// How a load ended; the label of kvindex_snapshot_loads_total.
enum class SnapshotLoadOutcome {
  kLoaded,      // the index holds the snapshot's workers
  kNone,        // no snapshot in the directory (a first start)
  kUnreadable,  // the file or directory could not be read
  kCorrupt,     // truncated, flipped, not a snapshot, or records that do not decode
  kVersion,     // another format version
  kHashing,     // written under another index hash or other hashing flags
};
// "loaded", "none", "unreadable", "corrupt", "version", "hashing".
std::string_view SnapshotLoadOutcomeName(SnapshotLoadOutcome outcome);
inline constexpr SnapshotLoadOutcome kSnapshotLoadOutcomes[] = {
    SnapshotLoadOutcome::kLoaded,  SnapshotLoadOutcome::kNone,    SnapshotLoadOutcome::kUnreadable,
    SnapshotLoadOutcome::kCorrupt, SnapshotLoadOutcome::kVersion, SnapshotLoadOutcome::kHashing};

struct SnapshotLoad {
  SnapshotLoadOutcome outcome = SnapshotLoadOutcome::kNone;
  absl::Status status;  // why nothing was loaded; OK when kLoaded
  // kLoaded only:
  std::vector<Pod> pods;
  std::vector<WorkerResume> resumes;  // one per worker imported, with its pod as saved
  uint64_t bytes = 0;
  uint64_t workers = 0;  // imported
  uint64_t skipped = 0;  // saved workers not imported: their pod is not in the snapshot or has fewer ranks
  uint64_t entries = 0;
  absl::Time created;
  absl::Duration duration;
};

// Loads the snapshot of `dir` into `index`, which must hold none of its
// workers: every worker whose pod the snapshot has is imported, and gets a
// WorkerResume. A snapshot that is not kLoaded leaves `index` as it was (a
// record that fails to decode or import after the checksum passed removes
// the workers imported before it), whatever the file holds.
SnapshotLoad LoadIndexSnapshot(const std::string& dir, std::string_view hashing_flags, PrefixIndex* index);

}  // namespace kvindex
