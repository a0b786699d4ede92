#include "core/snapshot/body_export.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/snapshot/internal/byte_codec.h"
#include "core/snapshot/internal/snapshot_records.h"
#include "core/snapshot/snapshot_format.h"

namespace kvindex {
namespace {

using snapshot_internal::ByteSink;

// Cuts whole records into pieces (see the header): records are packed into
// pending_ until the next one would not fit; a record larger than a piece is
// sent in full pieces flagged as continued, and its tail (which ends at a
// record boundary) starts the next packed piece.
class PieceCutter {
 public:
  PieceCutter(size_t max_piece, const BodySink& sink) : max_(std::max<size_t>(max_piece, 1)), sink_(sink) {}

  absl::Status AddRecord(std::string_view record) {
    if (!pending_.empty() && pending_.size() + record.size() > max_) {
      if (absl::Status s = Emit(pending_, false); !s.ok()) return s;
      pending_.clear();
    }
    while (record.size() > max_) {  // only when pending_ is empty
      if (absl::Status s = Emit(record.substr(0, max_), true); !s.ok()) return s;
      record.remove_prefix(max_);
    }
    pending_.append(record.data(), record.size());
    return absl::OkStatus();
  }

  absl::Status Finish() {
    if (pending_.empty()) return absl::OkStatus();
    absl::Status s = Emit(pending_, false);
    pending_.clear();
    return s;
  }

  uint64_t bytes() const { return bytes_; }

 private:
  absl::Status Emit(std::string_view piece, bool continues) {
    bytes_ += piece.size();
    return sink_(piece, continues);
  }

  const size_t max_;
  const BodySink& sink_;
  std::string pending_;
  uint64_t bytes_ = 0;
};

}  // namespace

absl::StatusOr<SnapshotWriteStats> ExportIndexBody(const PrefixIndex& index, const std::vector<Pod>& pods,
                                                   const BodyExportOptions& options, const BodySink& sink) {
  SnapshotWriteStats stats;
  stats.created = absl::Now();
  PieceCutter cutter(options.max_piece_bytes, sink);
  std::string record;
  ByteSink out(&record);
  out.Str(HashingFingerprint(options.hashing_flags));
  out.U64(static_cast<uint64_t>(absl::ToUnixMicros(stats.created)));
  out.U64(pods.size());
  for (const Pod& pod : pods) snapshot_internal::EncodePod(pod, out);
  stats.pods = pods.size();
  if (absl::Status s = cutter.AddRecord(record); !s.ok()) return s;
  for (const WorkerKey& key : index.WorkerKeys()) {
    if (absl::Now() > options.deadline) {
      return absl::DeadlineExceededError(absl::StrCat("abandoned after ", stats.workers,
                                                      " workers: past its deadline"));
    }
    ExportPause pause;
    std::optional<WorkerSnapshot> worker = index.ExportWorker(key, &pause);
    stats.longest_pause = std::max(stats.longest_pause, pause.longest_hold);
    // A worker removed meanwhile, or one whose blocks follow no known batch
    // (created or cleared since its last batch): its reader replays it from 0.
    if (!worker.has_value() || !worker->cursor.has_value()) continue;
    record.clear();
    out.U8(kSnapshotWorkerTag);
    snapshot_internal::EncodeWorker(*worker, out);
    ++stats.workers;
    stats.entries += worker->entries();
    worker.reset();
    if (absl::Status s = cutter.AddRecord(record); !s.ok()) return s;
  }
  record.clear();
  out.U8(kSnapshotEndTag);
  if (absl::Status s = cutter.AddRecord(record); !s.ok()) return s;
  if (absl::Status s = cutter.Finish(); !s.ok()) return s;
  stats.bytes = cutter.bytes();
  stats.duration = absl::Now() - stats.created;
  return stats;
}

}  // namespace kvindex
