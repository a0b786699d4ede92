// Bootstrap from a peer, in process: ExportIndex streams a replica's index in
// chunks no larger than asked, guarded by the token even without
// --auth_all_rpcs; BootstrapFromPeer imports it whole (cursors and
// history_complete as the peer had them) or, refused (wrong or missing token,
// no peer), leaves the index empty and counts the outcome; a peer that
// answers UNAVAILABLE (stopping) is asked again, the other outcomes are
// final; a server whose bootstrap fails starts anyway.

#include <stdlib.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "kvindex/v1/kvindex.grpc.pb.h"
#include "server/kvindex_server.h"
#include "server/peer_bootstrap.h"
#include "tests/server/prometheus_text.h"
#include "tests/testing/dead_port.h"

namespace kvindex::testing {
namespace {

constexpr char kToken[] = "s3cret";

Pod MakePod(std::string name) {
  Pod pod;
  pod.ns = "ns";
  pod.name = std::move(name);
  pod.ip = "127.0.0.1";
  pod.phase = "Running";
  pod.labels = {{"model.aibrix.ai/name", "llama"}, {"model.aibrix.ai/kv-events-enabled", "true"}};
  return pod;
}

// `worker` stores `n` blocks of 4 tokens (one chain) at `seq`.
void Store(PrefixIndex& index, const WorkerKey& worker, size_t n, uint64_t seq, bool complete) {
  BlockStored s;
  for (size_t i = 0; i < n; ++i) s.block_hashes.push_back(seq * 100000 + i + 1);
  for (uint32_t t = 0; t < 4 * n; ++t) s.token_ids.push_back(t);
  s.block_size = 4;
  EventBatch b;
  b.events.push_back(std::move(s));
  (void)index.Apply(worker, WorkerContext{"llama", ""}, b, BatchCursor{seq, seq * 7, complete});
}

double Counter(KvIndexMetrics& metrics, const std::string& series) {
  absl::StatusOr<PrometheusScrape> scrape = ParsePrometheusText(metrics.Render());
  EXPECT_TRUE(scrape.ok()) << scrape.status();
  return scrape.ok() ? scrape->Get(series).value_or(-1) : -1;
}

std::string Outcome(server::BootstrapOutcome outcome) {
  return absl::StrCat("kvindex_bootstrap_total{outcome=\"", std::string(server::BootstrapOutcomeName(outcome)), "\"}");
}

// A replica with a token (SyncPods and ExportIndex guarded, the rest open),
// pods recorded but not followed, and two workers in its index: a/0 large and
// complete, b/0 small and incomplete.
class PeerBootstrapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.auth = server::BearerAuth(kToken, /*all_rpcs=*/false);
    options.manager.sync_enabled = false;
    options.initial_pods = {MakePod("a"), MakePod("b")};
    absl::StatusOr<std::unique_ptr<server::KvIndexServer>> peer = server::KvIndexServer::Start(options);
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *std::move(peer);
    Store(peer_->index(), {"ns/a", 0}, 2000, 41, true);
    Store(peer_->index(), {"ns/b", 0}, 3, 9, false);
    address_ = absl::StrCat("127.0.0.1:", peer_->port());
  }

  server::BootstrapResult Bootstrap(std::string token, PrefixIndex* index, std::string peer = "",
                                    absl::Duration retry_pause = server::BootstrapOptions().retry_pause) {
    return server::BootstrapFromPeer({.peer = peer.empty() ? address_ : peer,
                                      .timeout = absl::Seconds(20),
                                      .token = std::move(token),
                                      .retry_pause = retry_pause},
                                     index, &metrics_);
  }

  std::unique_ptr<server::KvIndexServer> peer_;
  std::string address_;
  KvIndexMetrics metrics_;
};

TEST_F(PeerBootstrapTest, AReplicaImportsThePeersWorkersCursorsAndPods) {
  PrefixIndex index;
  server::BootstrapResult result = Bootstrap(kToken, &index);
  ASSERT_EQ(result.outcome, server::BootstrapOutcome::kLoaded) << result.status;
  const SnapshotLoad& load = result.load;
  ASSERT_EQ(load.pods.size(), 2u);
  EXPECT_EQ(load.pods[0], MakePod("a"));
  ASSERT_EQ(load.resumes.size(), 2u);
  EXPECT_EQ(load.resumes[0].worker, (WorkerKey{"ns/a", 0}));
  EXPECT_EQ(load.resumes[0].cursor, (BatchCursor{41, 41 * 7, true}));
  EXPECT_EQ(load.resumes[1].cursor, (BatchCursor{9, 9 * 7, false}));  // incomplete at the peer, so here too
  EXPECT_EQ(load.entries, 2003u);
  EXPECT_EQ(index.Stats().entries, peer_->index().Stats().entries);
  EXPECT_GT(result.bytes, 2000u * 16);
  EXPECT_EQ(Counter(metrics_, Outcome(server::BootstrapOutcome::kLoaded)), 1);
  EXPECT_EQ(Counter(metrics_, "kvindex_bootstrap_bytes"), static_cast<double>(result.bytes));
}

TEST_F(PeerBootstrapTest, ChunksStayWithinTheSizeAsked) {
  auto stub = v1::KvIndex::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  v1::ExportIndexRequest request;
  request.set_max_chunk_bytes(1024);
  std::unique_ptr<grpc::ClientReader<v1::IndexChunk>> reader = stub->ExportIndex(&context, request);
  v1::IndexChunk chunk;
  size_t chunks = 0, continued = 0;
  while (reader->Read(&chunk)) {
    ++chunks;
    EXPECT_LE(chunk.body().size(), 1024u);
    EXPECT_EQ(chunk.format_version(), 1u);
    continued += chunk.record_continues() ? 1 : 0;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_GT(chunks, 30u);     // a/0 alone is over 30 KB
  EXPECT_GT(continued, 20u);  // carried across chunks
  EXPECT_FALSE(chunk.record_continues());
}

TEST_F(PeerBootstrapTest, ExportIndexNeedsTheTokenEvenWithoutAuthAllRpcs) {
  for (const std::string& token : {std::string(""), std::string("wrong")}) {
    PrefixIndex index;
    server::BootstrapResult result = Bootstrap(token, &index);
    EXPECT_EQ(result.outcome, server::BootstrapOutcome::kUnauthenticated) << token;
    EXPECT_EQ(result.status.code(), absl::StatusCode::kUnauthenticated) << result.status;
    EXPECT_TRUE(index.WorkerKeys().empty());
    EXPECT_TRUE(result.load.resumes.empty());
  }
  EXPECT_EQ(Counter(metrics_, Outcome(server::BootstrapOutcome::kUnauthenticated)), 2);
  // The other reads stay open without --auth_all_rpcs.
  auto stub = v1::KvIndex::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::GetStatsResponse stats;
  EXPECT_TRUE(stub->GetStats(&context, v1::GetStatsRequest(), &stats).ok());
}

TEST_F(PeerBootstrapTest, NoPeerIsUnreachableAndLeavesNothing) {
  absl::StatusOr<std::unique_ptr<testutil::DeadPort>> dead = testutil::DeadPort::Bind();
  ASSERT_TRUE(dead.ok()) << dead.status();
  PrefixIndex index;
  server::BootstrapResult result = Bootstrap(kToken, &index, absl::StrCat("127.0.0.1:", (*dead)->port()));
  EXPECT_EQ(result.outcome, server::BootstrapOutcome::kUnreachable) << result.status;
  EXPECT_EQ(result.attempts, 3);  // 0.5 s and 1 s apart
  EXPECT_TRUE(index.WorkerKeys().empty());
  EXPECT_EQ(Counter(metrics_, Outcome(server::BootstrapOutcome::kUnreachable)), 1);
}

// A peer in front of the real one whose first `failures` ExportIndex calls
// answer UNAVAILABLE, as a replica shutting down does; later calls are
// relayed to the real peer, token included.
class StoppingPeer final : public v1::KvIndex::Service {
 public:
  StoppingPeer(const std::string& real, int failures)
      : real_(v1::KvIndex::NewStub(grpc::CreateChannel(real, grpc::InsecureChannelCredentials()))),
        failures_(failures) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~StoppingPeer() override { server_->Shutdown(); }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int calls() const { return calls_.load(); }

  grpc::Status ExportIndex(grpc::ServerContext* context, const v1::ExportIndexRequest* request,
                           grpc::ServerWriter<v1::IndexChunk>* writer) override {
    if (calls_.fetch_add(1) < failures_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down");
    grpc::ClientContext relay;
    for (const auto& [key, value] : context->client_metadata()) {
      if (key == "authorization") relay.AddMetadata("authorization", std::string(value.data(), value.size()));
    }
    std::unique_ptr<grpc::ClientReader<v1::IndexChunk>> reader = real_->ExportIndex(&relay, *request);
    v1::IndexChunk chunk;
    while (reader->Read(&chunk)) writer->Write(chunk);
    return reader->Finish();
  }

 private:
  std::unique_ptr<v1::KvIndex::Stub> real_;
  const int failures_;
  std::atomic<int> calls_{0};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(PeerBootstrapTest, APeerThatWasStoppingIsAskedAgain) {
  StoppingPeer peer(address_, /*failures=*/2);
  ASSERT_NE(peer.address(), "127.0.0.1:0");
  PrefixIndex index;
  server::BootstrapResult result = Bootstrap(kToken, &index, peer.address(), absl::Milliseconds(10));
  ASSERT_EQ(result.outcome, server::BootstrapOutcome::kLoaded) << result.status;
  EXPECT_EQ(result.attempts, 3);
  EXPECT_EQ(peer.calls(), 3);
  EXPECT_EQ(index.Stats().entries, peer_->index().Stats().entries);
  EXPECT_EQ(Counter(metrics_, Outcome(server::BootstrapOutcome::kLoaded)), 1);  // one bootstrap, counted once
  EXPECT_EQ(Counter(metrics_, Outcome(server::BootstrapOutcome::kUnreachable)), 0);
}

TEST_F(PeerBootstrapTest, OnlyUnreachableIsAskedAgainAndOnlyAsOftenAsAllowed) {
  {
    StoppingPeer peer(address_, /*failures=*/5);
    PrefixIndex index;
    server::BootstrapResult result = Bootstrap(kToken, &index, peer.address(), absl::Milliseconds(10));
    EXPECT_EQ(result.outcome, server::BootstrapOutcome::kUnreachable) << result.status;
    EXPECT_EQ(result.attempts, 3);
    EXPECT_EQ(peer.calls(), 3);
    EXPECT_TRUE(index.WorkerKeys().empty());
  }
  {
    StoppingPeer peer(address_, /*failures=*/0);
    PrefixIndex index;
    server::BootstrapResult result = Bootstrap("wrong", &index, peer.address(), absl::Milliseconds(10));
    EXPECT_EQ(result.outcome, server::BootstrapOutcome::kUnauthenticated) << result.status;
    EXPECT_EQ(result.attempts, 1);
    EXPECT_EQ(peer.calls(), 1);
  }
  // No pause fits in what is left of the timeout: no second attempt.
  StoppingPeer peer(address_, /*failures=*/5);
  PrefixIndex index;
  server::BootstrapResult result = Bootstrap(kToken, &index, peer.address(), absl::Seconds(30));
  EXPECT_EQ(result.outcome, server::BootstrapOutcome::kUnreachable) << result.status;
  EXPECT_EQ(result.attempts, 1);
}

TEST_F(PeerBootstrapTest, AServerWhoseBootstrapFailsStartsColdAndCountsIt) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.manager.sync_enabled = false;
  options.bootstrap = {.peer = address_, .timeout = absl::Seconds(20), .token = "wrong"};
  absl::StatusOr<std::unique_ptr<server::KvIndexServer>> server = server::KvIndexServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE((*server)->index().WorkerKeys().empty());
  EXPECT_TRUE((*server)->pods().ListPods().empty());
  EXPECT_EQ(Counter((*server)->metrics(), Outcome(server::BootstrapOutcome::kUnauthenticated)), 1);
  EXPECT_EQ(Counter((*server)->metrics(), Outcome(server::BootstrapOutcome::kLoaded)), 0);  // registered at start
  EXPECT_EQ(Counter(peer_->metrics(), "kvindex_index_exports_total{result=\"ok\"}"), 0);
}

TEST_F(PeerBootstrapTest, ThePeerWinsOverTheSnapshotWhichIsTheFallback) {
  char tmpl[] = "/tmp/kvindex-bootstrap-test-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  ASSERT_TRUE(WriteIndexSnapshot(peer_->index(), {MakePod("a"), MakePod("b")}, {.dir = dir}).ok());
  absl::StatusOr<std::unique_ptr<testutil::DeadPort>> dead = testutil::DeadPort::Bind();
  ASSERT_TRUE(dead.ok()) << dead.status();
  for (const bool peer_alive : {true, false}) {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.manager.sync_enabled = false;
    options.snapshot.dir = dir;
    options.bootstrap = {.peer = peer_alive ? address_ : absl::StrCat("127.0.0.1:", (*dead)->port()),
                         .timeout = absl::Seconds(20),
                         .token = kToken};
    absl::StatusOr<std::unique_ptr<server::KvIndexServer>> server = server::KvIndexServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    KvIndexMetrics& metrics = (*server)->metrics();
    EXPECT_EQ(Counter(metrics, Outcome(server::BootstrapOutcome::kLoaded)), peer_alive ? 1 : 0);
    EXPECT_EQ(Counter(metrics, Outcome(server::BootstrapOutcome::kUnreachable)), peer_alive ? 0 : 1);
    EXPECT_EQ(Counter(metrics, "kvindex_snapshot_loads_total{outcome=\"loaded\"}"), peer_alive ? 0 : 1);
    EXPECT_EQ((*server)->pods().ListPods().size(), 2u);  // the peer's pods, or the snapshot's
  }
  std::system(absl::StrCat("rm -rf '", dir, "'").c_str());
}

}  // namespace
}  // namespace kvindex::testing
