#include "server/kvindex_server.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "spdlog/spdlog.h"

namespace kvindex::server {

namespace {

// `options` with each speculative confirmation's latency observed in `metrics`
// (constructed after the index, destroyed before it: the manager, which
// applies batches, stops first).
IndexOptions ObservedBy(IndexOptions options, KvIndexMetrics* metrics) {
  options.speculative.on_confirm = [metrics](absl::Duration latency) { metrics->OnSpeculativeConfirm(latency); };
  return options;
}

}  // namespace

KvIndexServer::KvIndexServer(ServerOptions options)
    : options_(std::move(options)), index_(ObservedBy(options_.index, &metrics_)) {}

KvIndexServer::~KvIndexServer() { Shutdown(absl::Now()); }

absl::StatusOr<std::unique_ptr<KvIndexServer>> KvIndexServer::Start(ServerOptions options) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();

  std::unique_ptr<KvIndexServer> server(new KvIndexServer(std::move(options)));
  server->options_.manager.metrics = &server->metrics_;
  const ServerOptions& opts = server->options_;
  IndexProvider* provider = server.get();
  // A peer's index, or else a snapshot, is loaded before anything
  // subscribes: its workers resume their engines' streams after the batch it
  // last applied, its pods are recorded. The peer wins: it is live, so its
  // cursors are seconds old (every engine's replay buffer still holds what
  // follows them), where a snapshot is at least as old as this server's downtime.
  SnapshotLoad restored;
  bool bootstrapped = false;
  if (!opts.bootstrap.peer.empty()) {
    BootstrapResult peer = BootstrapFromPeer(opts.bootstrap, &server->index_, &server->metrics_);
    if (peer.outcome == BootstrapOutcome::kLoaded) {
      restored = std::move(peer.load);
      bootstrapped = true;
    }
  }
  if (!opts.snapshot.dir.empty()) {
    if (bootstrapped) {
      spdlog::info("snapshot in {} not loaded: bootstrapped from {}, whose index is newer", opts.snapshot.dir,
                   opts.bootstrap.peer);
    } else {
      restored = SnapshotKeeper::Load(opts.snapshot, &server->index_, &server->metrics_);
    }
  }
  if (bootstrapped || !opts.snapshot.dir.empty()) server->options_.manager.resume = std::move(restored.resumes);
  server->manager_ = std::make_unique<SubscriptionManager>(provider, opts.manager);
  server->options_.manager.resume.clear();
  if (!opts.snapshot.dir.empty()) {
    server->snapshots_ = std::make_unique<SnapshotKeeper>(opts.snapshot, &server->index_, server->manager_.get(),
                                                          &server->metrics_);
  }
  for (const Pod& pod : restored.pods) (void)server->manager_->Upsert(pod);  // recorded until Start
  server->metrics_.SetSources(&server->index_, server->manager_.get());
  if (absl::Status status = server->manager_->Start(); !status.ok()) return status;
  if (server->snapshots_ != nullptr) server->snapshots_->Start();
  if (!opts.initial_pods.empty()) {
    for (const PodAck& ack : server->manager_->ApplySnapshot(opts.initial_pods)) {
      if (ack.outcome == PodOutcome::kRejected || ack.outcome == PodOutcome::kIgnored) {
        spdlog::warn("--pods_file: pod {} {}: {}", ack.pod, PodOutcomeName(ack.outcome), ack.reason);
      }
    }
  }
  ServiceOptions service = opts.service;
  service.max_response_bytes = static_cast<size_t>(opts.max_message_bytes);
  service.max_request_bytes = static_cast<size_t>(opts.max_message_bytes);
  server->service_ = std::make_unique<KvIndexService>(&server->index_, server->manager_.get(), &opts.auth,
                                                      service, &server->metrics_);
  if (!opts.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
        MetricsHttpServer::Start(opts.metrics_listen, [metrics = &server->metrics_] { return metrics->Render(); });
    if (!http.ok()) return http.status();
    server->metrics_http_ = *std::move(http);
  }

  // Both are process-wide switches of gRPC; setting them again is harmless.
  // Touching the health messages links their descriptors in, so that
  // reflection can also describe grpc.health.v1.Health.
  grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  builder.AddListeningPort(opts.listen, *credentials, &server->port_);
  // gRPC's own receive limit would refuse a large request before the service
  // sees it (uncounted); kvindex.v1 methods check --max_message_bytes
  // themselves (ServiceOptions::max_request_bytes). gRPC receives a whole
  // message before its own check either way.
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(opts.max_message_bytes);
  // gRPC sets SO_REUSEPORT by default: a second server on the same port would
  // share it (and its calls) instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(&server->reflection_v1_);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot serve on ", opts.listen,
                                               " (address in use, bad address, or bad TLS files?)"));
  }
  server->reflection_v1_.Connect(server->server_.get());
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(v1::KvIndex::service_full_name(), true);
  return server;
}

void KvIndexServer::Shutdown(absl::Time deadline) {
  if (shut_down_) return;
  shut_down_ = true;
  if (metrics_http_ != nullptr) metrics_http_->Stop();
  if (server_ != nullptr) {
    // Refusing comes first: a client that sees NOT_SERVING finds new calls refused.
    service_->StopAccepting();
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService(); health != nullptr) {
      health->Shutdown();  // NOT_SERVING, and no later change
    }
    // gRPC's own shutdown closes the port at once, so health would stop answering
    // (and Check could never say NOT_SERVING); until the in-flight calls are done
    // it keeps answering, while the service refuses every new kvindex.v1 call.
    if (!service_->AwaitIdle(deadline)) spdlog::warn("calls still in flight at the shutdown deadline: cancelling them");
    server_->Shutdown(absl::ToChronoTime(deadline));  // cancels what is left at `deadline`
    reflection_v1_.Disconnect();
  }
  if (manager_ != nullptr) manager_->Stop();
  if (snapshots_ != nullptr) {
    snapshots_->Stop();
    snapshots_->WriteFinal(std::max(deadline, absl::Now()) + kFinalSnapshotTime);
  }
}

}  // namespace kvindex::server
