#include "core/snapshot/body_import.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/snapshot/internal/byte_codec.h"
#include "core/snapshot/internal/snapshot_records.h"
#include "core/snapshot/snapshot_format.h"

namespace kvindex {

using snapshot_internal::ByteSource;

BodyImporter::BodyImporter(std::string_view hashing_flags, PrefixIndex* index)
    : fingerprint_(HashingFingerprint(hashing_flags)), index_(index), start_(absl::Now()) {
  load_.outcome = SnapshotLoadOutcome::kLoaded;
}

BodyImporter::~BodyImporter() {
  if (!finished_ || load_.outcome != SnapshotLoadOutcome::kLoaded) Undo();
}

void BodyImporter::Undo() {
  for (const WorkerResume& r : load_.resumes) index_->RemoveWorker(r.worker);
  load_.resumes.clear();
}

bool BodyImporter::Refuse(SnapshotLoadOutcome outcome, absl::Status why) {
  Undo();
  load_.outcome = outcome;
  load_.status = std::move(why);
  return false;
}

bool BodyImporter::Add(std::string_view piece, bool record_continues) {
  if (load_.outcome != SnapshotLoadOutcome::kLoaded || finished_) return false;
  load_.bytes += piece.size();
  if (record_continues) {
    buffer_.append(piece.data(), piece.size());
    return true;
  }
  if (buffer_.empty()) return Decode(piece);  // a whole file, or a piece of whole records: no copy
  buffer_.append(piece.data(), piece.size());
  const bool ok = Decode(buffer_);
  buffer_.clear();
  return ok;
}

bool BodyImporter::Decode(std::string_view bytes) {
  ByteSource source(bytes);
  if (!preamble_done_) {
    std::string fingerprint;
    uint64_t created_us = 0, pod_count = 0;
    if (!source.Str(fingerprint) || !source.U64(created_us) || !source.Count(pod_count, 40)) {
      return Refuse(SnapshotLoadOutcome::kCorrupt, absl::DataLossError("snapshot preamble does not decode"));
    }
    if (fingerprint != fingerprint_) {
      return Refuse(SnapshotLoadOutcome::kHashing,
                    absl::FailedPreconditionError(absl::StrCat("snapshot hashed as \"", fingerprint,
                                                               "\", this server hashes as \"", fingerprint_, "\"")));
    }
    load_.created = absl::FromUnixMicros(static_cast<int64_t>(created_us));
    for (uint64_t i = 0; i < pod_count; ++i) {
      Pod pod;
      if (!snapshot_internal::DecodePod(source, pod)) {
        return Refuse(SnapshotLoadOutcome::kCorrupt,
                      absl::DataLossError(absl::StrCat("snapshot pod ", i, " does not decode")));
      }
      pod_at_[PodKey(pod)] = load_.pods.size();
      load_.pods.push_back(std::move(pod));
    }
    preamble_done_ = true;
  }
  while (source.remaining() != 0) {
    if (ended_) return Refuse(SnapshotLoadOutcome::kCorrupt, absl::DataLossError("snapshot has bytes after its end record"));
    uint8_t tag = 0;
    source.U8(tag);
    if (tag == kSnapshotEndTag) {
      ended_ = true;
      continue;
    }
    WorkerSnapshot worker;
    if (tag != kSnapshotWorkerTag || !snapshot_internal::DecodeWorker(source, worker) || !worker.cursor.has_value()) {
      return Refuse(SnapshotLoadOutcome::kCorrupt,
                    absl::DataLossError(absl::StrCat("snapshot worker record ", load_.workers + load_.skipped,
                                                     " does not decode")));
    }
    auto pod = pod_at_.find(worker.worker.pod);
    if (pod == pod_at_.end() || worker.worker.dp_rank >= PlanPod(load_.pods[pod->second]).dp_size) {
      ++load_.skipped;
      continue;
    }
    if (absl::Status imported = index_->ImportWorker(worker); !imported.ok()) {
      return Refuse(SnapshotLoadOutcome::kCorrupt,
                    absl::DataLossError(absl::StrCat("snapshot worker ", WorkerKeyString(worker.worker),
                                                     " cannot be imported: ", imported.message())));
    }
    ++load_.workers;
    load_.entries += worker.entries();
    load_.resumes.push_back(WorkerResume{worker.worker, load_.pods[pod->second], *worker.cursor});
  }
  return true;
}

SnapshotLoad BodyImporter::Finish() {
  finished_ = true;
  if (load_.outcome == SnapshotLoadOutcome::kLoaded) {
    if (!buffer_.empty()) {
      Refuse(SnapshotLoadOutcome::kCorrupt, absl::DataLossError("snapshot ends inside a record"));
    } else if (!preamble_done_ || !ended_) {
      Refuse(SnapshotLoadOutcome::kCorrupt, absl::DataLossError("snapshot ends without its end record"));
    }
  }
  SnapshotLoad load = std::move(load_);
  if (load.outcome != SnapshotLoadOutcome::kLoaded) {
    load.pods.clear();
    load.resumes.clear();
  }
  load.duration = absl::Now() - start_;
  load_ = SnapshotLoad{};
  load_.outcome = SnapshotLoadOutcome::kLoaded;  // what was moved out is no longer ours to undo
  return load;
}

}  // namespace kvindex
