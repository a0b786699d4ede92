#pragma once

// Subscriber: one worker (a pod's dp rank) on one IoThread.
//  - a SUB socket connected to the engine's PUB (absent in bind mode, where a
//    BindReceiver hands it the worker's messages through OnLiveMessage): the
//    worker's only socket, one mailbox fd and one TCP connection;
//  - while a replay is out (when the engine has a replay socket), a DEALER
//    connected to the engine's replay ROUTER, opened once the worker holds one
//    of its I/O thread's ReplaySlots (SubscriberConfig::replay_slots); until
//    then the request waits, and the replay's timeout does not run. (One ROUTER per I/O thread for
//    every worker's replay would save the DEALER's mailbox, but libzmq 4.3's
//    fair queue asserts when one of its connections ends while another's
//    message is half read: `!_more` in fq.cpp.)
// Live messages must be exactly [topic, 8-byte big-endian seq, payload]; replay
// replies [""(, topic), seq, payload] with the end marker seq 0xff..ff. Anything
// else is counted and skipped. Sequencing is WorkerFeed's; batches go to the
// PrefixIndex. Reconnects (backoff to 30 s) and dead-peer detection (ZMTP
// heartbeats) are ZeroMQ's. The worker is "connecting" until the engine is
// heard from (a live batch or a replay reply): no socket monitor, which would
// cost two sockets per worker.
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
#include "core/index/prefix_index.h"
#include "core/index/worker_key.h"
#include "core/ingest/ingest_metrics.h"
#include "core/ingest/internal/block_writer.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/worker_feed.h"
#include "core/ingest/internal/worker_subscription.h"
#include "core/ingest/worker_status.h"
#include "core/ingest/zmq_wire.h"
#include "zmq.hpp"

namespace kvindex {

class Subscriber : public WorkerSubscription {
 public:
  // Creates and connects the SUB socket (connects never wait for the engine)
  // and asks for replay from 0. UNAVAILABLE when the socket cannot be set up.
  // `index` must outlive the subscriber.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Subscriber>> Create(
      zmq::context_t& context, SubscriberConfig config, PrefixIndex* index,
      std::shared_ptr<WorkerStatusCell> status, const ZmqTuning& tuning = {});
  ~Subscriber() override;

  // IoTask.
  void CollectSockets(std::vector<zmq::socket_ref>& sockets) override;
  void OnReady(absl::Time now) override;
  absl::Time Deadline() const override { return feed_.Deadline(); }

  // WorkerSubscription.
  void OnLiveMessage(uint64_t seq, std::string_view payload, absl::Time now) override;

  const WorkerKey& worker() const { return config_.worker; }

 private:
  Subscriber(zmq::context_t& context, SubscriberConfig config, PrefixIndex* index,
             std::shared_ptr<WorkerStatusCell> status, const ZmqTuning& tuning);
  [[nodiscard]] absl::Status Open();

  void OpenReplay();  // throws zmq::error_t
  void ReadLive(absl::Time now);
  void ReadReplay(absl::Time now);
  // One message of the replay socket: its first frames and their count `total`.
  void OnReplayMessage(const std::vector<zmq::message_t>& frames, size_t total, absl::Time now);
  // Carries out the replay work the feed asked for (after the reads). Throws
  // nothing: a request it cannot send fails that replay in the feed.
  void CarryOutReplayOps(absl::Time now);
  // Opens the replay socket when it is not open (it exists only while a replay is out).
  bool SendReplayRequest(uint64_t from_seq);
  // True when the worker may have a replay out now (it holds one of its I/O
  // thread's replay slots, or there is no limit); false: it waits in line, and
  // gets a turn when its slot is free.
  bool TakeReplaySlot();
  // Publishes the feed's status to the cell and logs state changes.
  void Publish();

  zmq::context_t& context_;
  const SubscriberConfig config_;
  const std::shared_ptr<WorkerStatusCell> status_;
  const ZmqTuning tuning_;
  IndexWriter writer_;
  WorkerFeed feed_;

  std::optional<zmq::socket_t> sub_;
  std::optional<zmq::socket_t> replay_;
  std::optional<uint64_t> queued_request_;  // a replay request waiting for a replay slot
  WorkerStatus published_;  // last status written to status_
};

// Subscribers with real ZeroMQ sockets: the SubscriptionManager's default.
SubscriptionFactory& ZmqSubscriptions();

}  // namespace kvindex
