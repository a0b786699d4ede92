#pragma once

// BodyImporter: reads a snapshot body (snapshot_format.h) piece by piece, as
// body_export.h cuts it, and imports its workers into an index as their
// records complete — from a snapshot file (one piece, the whole body) or from
// a peer's ExportIndex stream (pieces of bounded size). Memory: what is
// buffered since the last record boundary (one piece plus the largest
// record), and the workers themselves in the index.
//
// All or nothing: unless Finish() returns kLoaded, every worker imported is
// removed again (by Finish, or by the destructor when the body never
// finished, e.g. a stream that broke), whatever the pieces held. A refusal
// says why: kHashing (another index hash or hashing flags) or kCorrupt
// (records that do not decode or cannot be imported, bytes after the end).
//
// Thread safety: one thread at a time; the index must hold none of the
// body's workers, and nothing else may use them until Finish returns.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/snapshot/index_snapshot.h"

namespace kvindex {

class BodyImporter {
 public:
  BodyImporter(std::string_view hashing_flags, PrefixIndex* index);
  ~BodyImporter();  // removes the imported workers unless Finish() returned kLoaded
  BodyImporter(const BodyImporter&) = delete;
  BodyImporter& operator=(const BodyImporter&) = delete;

  // Adds the next piece. When !record_continues, every record buffered is
  // decoded and its worker imported. False once the body is refused (later
  // pieces are ignored; Finish says why).
  bool Add(std::string_view piece, bool record_continues);

  // After the last piece: kLoaded when the end record closed the body and
  // nothing followed it; otherwise the refusal, nothing left imported.
  // `duration` counts from construction; `bytes` is the body's. Once.
  SnapshotLoad Finish();

 private:
  // Decodes every whole record of `bytes`; false (refused_ set) on failure.
  bool Decode(std::string_view bytes);
  bool Refuse(SnapshotLoadOutcome outcome, absl::Status why);
  void Undo();

  const std::string fingerprint_;
  PrefixIndex* const index_;
  const absl::Time start_;
  std::string buffer_;  // pieces since the last record boundary
  bool preamble_done_ = false;
  bool ended_ = false;  // the end record was read
  bool finished_ = false;
  absl::flat_hash_map<std::string, size_t> pod_at_;  // pod key -> index in load_.pods
  SnapshotLoad load_;  // outcome kLoaded until refused
};

}  // namespace kvindex
