#include "core/snapshot/index_snapshot.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/snapshot/internal/byte_codec.h"
#include "core/snapshot/internal/snapshot_records.h"
#include "core/snapshot/snapshot_file.h"
#include "core/snapshot/snapshot_format.h"

namespace kvindex {
namespace {

using snapshot_internal::ByteSink;
using snapshot_internal::ByteSource;

constexpr char kWorkerTag = 'W';
constexpr char kEndTag = 'E';

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
  SnapshotWriteStats stats;
  stats.created = absl::Now();
  absl::StatusOr<std::unique_ptr<SnapshotFileWriter>> file = SnapshotFileWriter::Create(options.dir);
  if (!file.ok()) return file.status();
  std::string record;
  ByteSink sink(&record);
  sink.Str(HashingFingerprint(options.hashing_flags));
  sink.U64(static_cast<uint64_t>(absl::ToUnixMicros(stats.created)));
  sink.U64(pods.size());
  for (const Pod& pod : pods) snapshot_internal::EncodePod(pod, sink);
  stats.pods = pods.size();
  for (const WorkerKey& key : index.WorkerKeys()) {
    if (absl::Now() > options.deadline) {
      return absl::DeadlineExceededError(absl::StrCat("snapshot abandoned after ", stats.workers,
                                                      " workers: past its deadline"));
    }
    const absl::Time copy_start = absl::Now();
    std::optional<WorkerSnapshot> worker = index.ExportWorker(key);
    stats.longest_pause = std::max(stats.longest_pause, absl::Now() - copy_start);
    // A worker removed meanwhile, or one whose blocks follow no known batch
    // (created or cleared since its last batch): a restart replays it from 0.
    if (!worker.has_value() || !worker->cursor.has_value()) continue;
    sink.U8(kWorkerTag);
    snapshot_internal::EncodeWorker(*worker, sink);
    ++stats.workers;
    stats.entries += worker->entries();
    worker.reset();
    if (absl::Status s = (*file)->Append(record); !s.ok()) return s;
    record.clear();
  }
  sink.U8(kEndTag);
  if (absl::Status s = (*file)->Append(record); !s.ok()) return s;
  absl::StatusOr<uint64_t> bytes = (*file)->Commit();
  if (!bytes.ok()) return bytes.status();
  stats.bytes = *bytes;
  stats.duration = absl::Now() - stats.created;
  return stats;
}

SnapshotLoad LoadIndexSnapshot(const std::string& dir, std::string_view hashing_flags, PrefixIndex* index) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> body = ReadSnapshotFile(SnapshotPath(dir));
  if (!body.ok()) return Refused(OutcomeOfRead(body.status()), body.status());
  ByteSource source(*body);
  std::string fingerprint;
  uint64_t created_us = 0, pod_count = 0;
  if (!source.Str(fingerprint) || !source.U64(created_us) || !source.Count(pod_count, 40)) {
    return Refused(SnapshotLoadOutcome::kCorrupt, absl::DataLossError("snapshot preamble does not decode"));
  }
  if (const std::string mine = HashingFingerprint(hashing_flags); fingerprint != mine) {
    return Refused(SnapshotLoadOutcome::kHashing,
                   absl::FailedPreconditionError(absl::StrCat("snapshot hashed as \"", fingerprint,
                                                              "\", this server hashes as \"", mine, "\"")));
  }
  SnapshotLoad load;
  load.created = absl::FromUnixMicros(static_cast<int64_t>(created_us));
  load.bytes = kSnapshotHeaderBytes + body->size();
  absl::flat_hash_map<std::string, size_t> pod_at;  // key -> index in load.pods
  for (uint64_t i = 0; i < pod_count; ++i) {
    Pod pod;
    if (!snapshot_internal::DecodePod(source, pod)) {
      return Refused(SnapshotLoadOutcome::kCorrupt, absl::DataLossError(absl::StrCat("snapshot pod ", i,
                                                                                     " does not decode")));
    }
    pod_at[PodKey(pod)] = load.pods.size();
    load.pods.push_back(std::move(pod));
  }
  // Imports worker by worker; any failure takes back what was imported.
  auto undo = [&](absl::Status why) {
    for (const WorkerResume& r : load.resumes) index->RemoveWorker(r.worker);
    return Refused(SnapshotLoadOutcome::kCorrupt, std::move(why));
  };
  for (;;) {
    uint8_t tag = 0;
    if (!source.U8(tag)) return undo(absl::DataLossError("snapshot ends without its end record"));
    if (tag == kEndTag) break;
    WorkerSnapshot worker;
    if (tag != kWorkerTag || !snapshot_internal::DecodeWorker(source, worker) || !worker.cursor.has_value()) {
      return undo(absl::DataLossError(absl::StrCat("snapshot worker record ", load.workers + load.skipped,
                                                   " does not decode")));
    }
    auto pod = pod_at.find(worker.worker.pod);
    if (pod == pod_at.end() || worker.worker.dp_rank >= PlanPod(load.pods[pod->second]).dp_size) {
      ++load.skipped;
      continue;
    }
    if (absl::Status imported = index->ImportWorker(worker); !imported.ok()) {
      return undo(absl::DataLossError(absl::StrCat("snapshot worker ", WorkerKeyString(worker.worker),
                                                   " cannot be imported: ", imported.message())));
    }
    ++load.workers;
    load.entries += worker.entries();
    load.resumes.push_back(WorkerResume{worker.worker, load.pods[pod->second], *worker.cursor});
  }
  if (source.remaining() != 0) return undo(absl::DataLossError("snapshot has bytes after its end record"));
  load.outcome = SnapshotLoadOutcome::kLoaded;
  load.duration = absl::Now() - start;
  return load;
}

}  // namespace kvindex
