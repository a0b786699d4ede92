#pragma once

// ExportIndexBody: the body of a snapshot (snapshot_format.h) — preamble,
// pods, one record per worker with a cursor, end record — produced in pieces
// of bounded size. The same bytes go into the snapshot file
// (WriteIndexSnapshot) and over the wire to a replica bootstrapping from this
// one (kvindex.v1.KvIndex.ExportIndex), so one reader (body_import.h) imports
// both.
//
// Pieces: every piece has at most max_piece_bytes bytes. A piece either ends
// at a record boundary (record_continues false: a reader may decode all it
// has buffered) or inside a record larger than a piece (true: the next piece
// continues it). Records smaller than a piece are packed together, so a reader
// buffers at most one piece plus the largest record.
//
// Consistency and pauses are WriteIndexSnapshot's (index_snapshot.h): one
// worker is copied at a time, in bounded steps of its own lock
// (PrefixIndex::ExportWorker),
// encoded and handed to the sink before the next is copied; the sink runs
// with no lock held, so a slow sink (a slow network peer) delays nobody but
// the export.
//
// Thread safety: may run on any thread while the index is in use; the sink is
// called on the calling thread.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/pod.h"
#include "core/snapshot/index_snapshot.h"

namespace kvindex {

struct BodyExportOptions {
  std::string hashing_flags;  // see HashingFingerprint (snapshot_format.h)
  // Checked between workers: past it the export stops with DEADLINE_EXCEEDED
  // ("abandoned after N workers: past its deadline").
  absl::Time deadline = absl::InfiniteFuture();
  size_t max_piece_bytes = 1 << 20;  // at least 1
};

// Receives the body's pieces in order; an error stops the export, which
// returns it.
using BodySink = std::function<absl::Status(std::string_view piece, bool record_continues)>;

// Exports `pods` and every worker of `index` that has a cursor to `sink`.
// Stats as WriteIndexSnapshot's, bytes counting the body only.
[[nodiscard]] absl::StatusOr<SnapshotWriteStats> ExportIndexBody(const PrefixIndex& index,
                                                                 const std::vector<Pod>& pods,
                                                                 const BodyExportOptions& options,
                                                                 const BodySink& sink);

}  // namespace kvindex
