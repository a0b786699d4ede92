#pragma once

// KvIndexServer: the wired process minus flags and signals. Owns the
// PrefixIndex, the SubscriptionManager that feeds it, the KvIndex service, the
// gRPC server with health and reflection (v1alpha and v1), and the metrics (KvIndexMetrics,
// served on GET /metrics when metrics_listen is set). kvindex-server's main() and the
// in-process tests both run exactly this.
//
// Thread safety: index(), pods(), port() may be used from any thread; Shutdown
// is idempotent and may be called from any thread but one at a time.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/pod.h"
#include "core/ingest/subscription_manager.h"
#include "grpcpp/server.h"
#include "server/bearer_auth.h"
#include "server/kvindex_metrics.h"
#include "server/kvindex_service.h"
#include "server/metrics_http_server.h"
#include "server/peer_bootstrap.h"
#include "server/reflection_v1.h"
#include "server/server_credentials.h"
#include "server/snapshot_keeper.h"

namespace kvindex::server {

struct ServerOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string listen = "0.0.0.0:50051";
  TlsFiles tls;
  BearerAuth auth;
  // Largest request or response message, bytes.
  int max_message_bytes = 16 << 20;
  ServiceOptions service;
  IndexOptions index;
  ManagerOptions manager;  // `metrics` is replaced by the server's own
  // host:port of the Prometheus endpoint GET /metrics (port 0 picks one, see
  // metrics_port()); empty: not served (metrics are still kept).
  std::string metrics_listen;
  // Applied as a snapshot before the server starts accepting calls (--pods_file).
  std::vector<Pod> initial_pods;
  // --snapshot_dir, --snapshot_interval: loaded before the subscriptions
  // start, written every interval and at Shutdown (snapshot_keeper.h).
  SnapshotOptions snapshot;
  // --bootstrap_from: the peer's index is streamed in before the
  // subscriptions start (peer_bootstrap.h). When it loads, the snapshot is
  // not read (the live peer's data is newer); when it fails, the snapshot is
  // loaded as usual, else the server starts cold.
  BootstrapOptions bootstrap;
};

class KvIndexServer : private IndexProvider {
 public:
  // Builds everything (bootstrapping from a peer or loading a snapshot first),
  // starts the subscriptions and applies initial_pods, then starts serving. UNAVAILABLE when the address (or metrics_listen) cannot be
  // bound; the status of credentials or manager start-up when those fail.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KvIndexServer>> Start(ServerOptions options);

  ~KvIndexServer() override;  // Shutdown(absl::Now())
  KvIndexServer(const KvIndexServer&) = delete;
  KvIndexServer& operator=(const KvIndexServer&) = delete;

  // The bound port (the chosen one when listen said port 0).
  int port() const { return port_; }
  // The bound metrics port; 0 when metrics are not served.
  int metrics_port() const { return metrics_http_ != nullptr ? metrics_http_->port() : 0; }

  PrefixIndex& index() { return index_; }
  SubscriptionManager& pods() { return *manager_; }
  KvIndexMetrics& metrics() { return metrics_; }

  // The metrics endpoint stops; new kvindex.v1 calls are refused (UNAVAILABLE)
  // and SyncPods streams are cancelled; then health turns NOT_SERVING. In-flight
  // unary calls get until `deadline` to finish, and health keeps answering (NOT_SERVING)
  // meanwhile; then the gRPC server stops, cancelling the calls still in
  // flight, and finally every subscription stops. With snapshot.dir, the
  // timer stops and a last snapshot is written if it fits before `deadline`
  // + kFinalSnapshotTime. Idempotent.
  void Shutdown(absl::Time deadline);
  static constexpr absl::Duration kFinalSnapshotTime = absl::Milliseconds(1500);

 private:
  explicit KvIndexServer(ServerOptions options);
  PrefixIndex* GetIndex() override { return &index_; }

  // Constant after Start().
  ServerOptions options_;
  PrefixIndex index_;
  KvIndexMetrics metrics_;  // reported into by the manager and the service: outlives both
  std::unique_ptr<SubscriptionManager> manager_;
  std::unique_ptr<SnapshotKeeper> snapshots_;  // null without snapshot.dir
  std::unique_ptr<KvIndexService> service_;
  ReflectionV1 reflection_v1_;  // relays to gRPC's v1alpha reflection of server_
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;  // renders from all of the above: destroyed first
  int port_ = 0;

  bool shut_down_ = false;
};

}  // namespace kvindex::server
