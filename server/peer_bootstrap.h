#pragma once

// Bootstrap from a peer: what kvindex-server --bootstrap_from=HOST:PORT does
// before its subscriptions start (README "Snapshots", "Bootstrap from a
// peer"). It calls the peer's ExportIndex, imports the stream as it arrives
// (the body of a snapshot, core/snapshot/body_import.h) and hands back the
// pods and each worker's WorkerResume, as a loaded snapshot does: each worker
// then follows its engine from the peer's last applied seq + 1, and keeps the
// peer's history_complete (a peer that is itself incomplete passes that on).
//
// Never fatal: whatever goes wrong (no peer, wrong token, a peer shutting
// down, a broken or refused stream, past the timeout), the index is left as
// it was, the outcome is counted (kvindex_bootstrap_total{outcome}) and
// logged in one line, and the caller starts from its snapshot or cold.
//
// A peer that cannot be reached (UNAVAILABLE: none listening yet, one shut
// down in the middle of the export) is asked again, on a new channel that
// resolves the target again, a few times within the timeout: in a rolling
// update the peer that the first attempt found may be the one being stopped.
// The other outcomes are final.
//
// Thread safety: called once, by the server's owner thread, before anything
// else uses the index.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/snapshot/index_snapshot.h"
#include "grpcpp/security/credentials.h"
#include "server/bootstrap_outcome.h"
#include "server/kvindex_metrics.h"

namespace kvindex::server {

struct BootstrapOptions {
  std::string peer;  // --bootstrap_from, a gRPC target (HOST:PORT, dns:///NAME:PORT); empty: none
  absl::Duration timeout = absl::Seconds(30);  // --bootstrap_timeout: the whole call, connection included
  // Presented as `authorization: Bearer <token>` when non-empty (the server's
  // own --auth_token_file: replicas of one deployment share it).
  std::string token;
  // The channel's credentials (MakePeerCredentials); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  uint32_t max_chunk_bytes = 1 << 20;  // ExportIndexRequest.max_chunk_bytes
  // Attempts while the outcome is kUnreachable, the pause before the second
  // one (doubling after each), all within `timeout`.
  int attempts = 3;
  absl::Duration retry_pause = absl::Milliseconds(500);
};

struct BootstrapResult {
  BootstrapOutcome outcome = BootstrapOutcome::kFailed;
  absl::Status status;  // why it did not load; OK when kLoaded
  // kLoaded: the pods and resumes to hand to the manager (created: when the
  // peer's export began).
  SnapshotLoad load;
  uint64_t bytes = 0;  // body bytes received, over all attempts
  int attempts = 0;    // ExportIndex calls made
};

// Streams options.peer's index into `index` (which holds none of its
// workers): all of it, or (any outcome but kLoaded) nothing.
BootstrapResult BootstrapFromPeer(const BootstrapOptions& options, PrefixIndex* index, KvIndexMetrics* metrics);

}  // namespace kvindex::server
