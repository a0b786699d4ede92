#include "core/snapshot/index_snapshot.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/snapshot/body_export.h"
#include "core/snapshot/body_import.h"
#include "core/snapshot/snapshot_file.h"
#include "core/snapshot/snapshot_format.h"

namespace kvindex {
namespace {

SnapshotLoad Refused(SnapshotLoadOutcome outcome, absl::Status status) {
  SnapshotLoad load;
  load.outcome = outcome;
  load.status = std::move(status);
  return load;
}

SnapshotLoadOutcome OutcomeOfRead(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return SnapshotLoadOutcome::kNone;
    case absl::StatusCode::kDataLoss:
      return SnapshotLoadOutcome::kCorrupt;
    case absl::StatusCode::kUnimplemented:
      return SnapshotLoadOutcome::kVersion;
    default:
      return SnapshotLoadOutcome::kUnreadable;
  }
}

}  // namespace

std::string_view SnapshotLoadOutcomeName(SnapshotLoadOutcome outcome) {
  switch (outcome) {
    case SnapshotLoadOutcome::kLoaded:
      return "loaded";
    case SnapshotLoadOutcome::kNone:
      return "none";
    case SnapshotLoadOutcome::kUnreadable:
      return "unreadable";
    case SnapshotLoadOutcome::kCorrupt:
      return "corrupt";
    case SnapshotLoadOutcome::kVersion:
      return "version";
    case SnapshotLoadOutcome::kHashing:
      return "hashing";
  }
  return "unknown";
}

absl::StatusOr<SnapshotWriteStats> WriteIndexSnapshot(const PrefixIndex& index, const std::vector<Pod>& pods,
                                                      const SnapshotWriteOptions& options) {
  absl::StatusOr<std::unique_ptr<SnapshotFileWriter>> file = SnapshotFileWriter::Create(options.dir);
  if (!file.ok()) return file.status();
  absl::StatusOr<SnapshotWriteStats> stats = ExportIndexBody(
      index, pods, BodyExportOptions{.hashing_flags = options.hashing_flags, .deadline = options.deadline},
      [&file](std::string_view piece, bool) { return (*file)->Append(piece); });
  if (!stats.ok()) {
    if (stats.status().code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat("snapshot ", stats.status().message()));
    }
    return stats.status();
  }
  absl::StatusOr<uint64_t> bytes = (*file)->Commit();
  if (!bytes.ok()) return bytes.status();
  stats->bytes = *bytes;
  stats->duration = absl::Now() - stats->created;
  return stats;
}

SnapshotLoad LoadIndexSnapshot(const std::string& dir, std::string_view hashing_flags, PrefixIndex* index) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> body = ReadSnapshotFile(SnapshotPath(dir));
  if (!body.ok()) return Refused(OutcomeOfRead(body.status()), body.status());
  BodyImporter importer(hashing_flags, index);
  importer.Add(*body, /*record_continues=*/false);
  SnapshotLoad load = importer.Finish();
  if (load.outcome != SnapshotLoadOutcome::kLoaded) return load;
  load.bytes = kSnapshotHeaderBytes + body->size();
  load.duration = absl::Now() - start;
  return load;
}

}  // namespace kvindex
