#pragma once

// Subscriber: the sockets of one worker (a pod's dp rank) on one IoThread.
//  - a SUB socket connected to the engine's PUB (absent in bind mode, where a
//    BindReceiver hands it the worker's messages through OnLiveMessage);
//  - a DEALER connected to the engine's replay ROUTER, when it has one;
//  - a PAIR reading the SUB socket's monitor (connected / disconnected).
// Live messages must be exactly [topic, 8-byte big-endian seq, payload]; replay
// replies [""(, topic), seq, payload] with the end marker seq 0xff..ff. Anything
// else is counted and skipped. Sequencing is WorkerFeed's; batches go to the
// PrefixIndex. Reconnects (backoff to 30 s) and dead-peer detection (ZMTP
// heartbeats) are ZeroMQ's.
//
// Thread safety: created, used and destroyed on its IoThread only. Its status
// is published to a WorkerStatusCell that any thread may read.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ingest_metrics.h"
#include "core/io_thread.h"
#include "core/prefix_index.h"
#include "core/worker_feed.h"
#include "core/worker_key.h"
#include "core/worker_status.h"
#include "zmq.hpp"

namespace kvindex {

struct SubscriberConfig {
  WorkerKey worker;
  WorkerContext context;
  std::string events_endpoint;  // "tcp://ip:port"; empty: bind mode (fed through OnLiveMessage)
  std::string replay_endpoint;  // "tcp://ip:port"; empty: the engine has no replay socket
  std::string topic;            // SUB prefix filter; empty: every topic
  absl::Duration replay_timeout = absl::Seconds(2);
  size_t max_backlog = 100000;
  IngestMetrics* metrics = nullptr;  // not owned, outlives the subscriber; null: not reported
};

// ZeroMQ options every kvindex socket talking to engines gets.
struct ZmqTuning {
  int reconnect_ivl_ms = 100;
  int reconnect_ivl_max_ms = 30000;  // exponential backoff cap
  int heartbeat_ivl_ms = 5000;       // ZMTP PING interval
  int heartbeat_timeout_ms = 15000;  // no traffic for this long: the connection is dead
  int64_t max_msg_bytes = (64 << 20) + 4096;  // above any payload DecodeEventBatch accepts
  int rcvhwm = 10000;
};

// Applies `tuning` (plus linger 0, IPv6 on) to a socket. Throws zmq::error_t.
void TuneSocket(zmq::socket_t& socket, const ZmqTuning& tuning);

// "tcp://<ip>:<port>", IPv6 addresses bracketed.
std::string TcpEndpoint(std::string_view ip, uint32_t port);

// seq -> 8 bytes big-endian, the seq frame of live and replay messages.
std::string SeqFrame(uint64_t seq);

// 8 bytes big-endian -> seq; nullopt for any other size.
std::optional<uint64_t> ParseSeqFrame(const zmq::message_t& frame);

// The replay end marker's seq.
inline constexpr uint64_t kReplayEndSeq = ~uint64_t{0};

class Subscriber : public IoTask, private FeedSink {
 public:
  // Creates and connects the sockets (connects never wait for the engine) and
  // asks for replay from 0. UNAVAILABLE when a socket cannot be set up.
  // `index` must outlive the subscriber.
  static absl::StatusOr<std::unique_ptr<Subscriber>> Create(
      zmq::context_t& context, SubscriberConfig config, PrefixIndex* index,
      std::shared_ptr<WorkerStatusCell> status, const ZmqTuning& tuning = {});
  ~Subscriber() override;

  // IoTask.
  void CollectPollItems(std::vector<zmq::pollitem_t>& items) override;
  void OnPoll(absl::Span<const zmq::pollitem_t> items, absl::Time now) override;
  absl::Time Deadline() const override { return feed_.Deadline(); }

  // Bind mode: one live message routed to this worker.
  void OnLiveMessage(uint64_t seq, std::string_view payload, absl::Time now);

  const WorkerKey& worker() const { return config_.worker; }

 private:
  Subscriber(zmq::context_t& context, SubscriberConfig config, PrefixIndex* index,
             std::shared_ptr<WorkerStatusCell> status, const ZmqTuning& tuning);
  absl::Status Open();
  void OpenReplay();  // throws zmq::error_t

  void ReadLive(absl::Time now);
  void ReadReplay(absl::Time now);
  void ReadMonitor();
  // Publishes the feed's status to the cell and logs state changes.
  void Publish();

  // FeedSink.
  void ApplyBatch(const EventBatch& batch) override;
  void ClearBlocks() override;
  bool SendReplayRequest(uint64_t from_seq) override;
  void ResetReplay() override;

  zmq::context_t& context_;
  const SubscriberConfig config_;
  PrefixIndex* const index_;
  const std::shared_ptr<WorkerStatusCell> status_;
  const ZmqTuning tuning_;
  WorkerFeed feed_;

  std::optional<zmq::socket_t> sub_;
  std::optional<zmq::socket_t> monitor_;
  std::optional<zmq::socket_t> replay_;
  WorkerStatus published_;  // last status written to status_
};

}  // namespace kvindex
