#pragma once

// Publisher: the ZeroMQ side of one simulated engine, as vLLM's
// ZmqEventPublisher does it (../shared/wire/README.md "Transport"):
//  - a PUB socket bound on host:events_port sending exactly
//    [topic, seq as 8 bytes big-endian, payload], seq 0 for the first batch
//    and +1 per batch;
//  - optionally a ROUTER bound on host:replay_port answering a request
//    ["", start_seq as 8 bytes] with one reply per buffered batch whose seq is
//    >= start_seq, ["", seq, payload] or ["", topic, seq, payload], then the end
//    marker ["", seq 0xffffffffffffffff, ""] or ["", "", seq 0xff..ff, ""]. The last
//    `replay_buffer_batches` batches (and at most `replay_buffer_bytes`) are kept.
//
// Thread safety: not thread-safe; create, use and destroy it on one thread
// (ZeroMQ sockets are single-threaded). Errors from ZeroMQ become statuses.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/ingest/zmq_wire.h"
#include "zmq.hpp"

namespace kvindex::sim {

// What replay replies look like.
enum class ReplyForm {
  kSeqPayload,       // ["", seq, payload]          (vLLM until 2025)
  kTopicSeqPayload,  // ["", topic, seq, payload]   (newer vLLM)
};

using ::kvindex::kReplayEndSeq;  // the seq of replay's end marker

struct PublisherOptions {
  std::string host = "127.0.0.1";  // interface to bind (IPv4 or IPv6 literal)
  uint32_t events_port = 0;        // 0: an ephemeral port (see events_port())
  bool replay = true;              // whether there is a replay ROUTER
  uint32_t replay_port = 0;        // 0: an ephemeral port
  std::string topic;               // first frame of every message; vLLM's default is ""
  ReplyForm reply_form = ReplyForm::kSeqPayload;
  size_t replay_buffer_batches = 10000;  // vLLM's buffer_steps
  size_t replay_buffer_bytes = size_t{64} << 20;
  int sndhwm = 100000;  // PUB high-water mark (vLLM's hwm); beyond it messages are dropped
  int linger_ms = 1000; // how long closing the PUB socket may flush queued messages
};

struct PublisherCounters {
  uint64_t batches = 0;           // batches published (each consumed a seq)
  uint64_t bytes = 0;             // payload bytes published
  uint64_t send_errors = 0;       // batches ZeroMQ refused (still buffered for replay)
  uint64_t replay_requests = 0;   // well-formed replay requests answered
  uint64_t replayed_batches = 0;  // replies sent, end markers excluded
  uint64_t bad_requests = 0;      // malformed replay requests dropped
  uint64_t restarts = 0;
};

class Publisher {
 public:
  // Creates and binds the sockets. UNAVAILABLE when a port cannot be bound.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Publisher>> Create(zmq::context_t& context, PublisherOptions options);
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Sends [topic, seq, payload] with the next seq and buffers the payload for
  // replay. A full PUB queue drops the message silently (as an engine's does);
  // UNAVAILABLE only when ZeroMQ fails, and the seq is consumed anyway.
  [[nodiscard]] absl::Status Publish(std::string payload);

  // Poll item of the ROUTER (socket nullptr and no events without replay), to
  // wait for requests with zmq::poll next to other publishers.
  zmq::pollitem_t ReplayPollItem();

  // Answers every replay request queued on the ROUTER, without waiting.
  // Malformed requests are counted and dropped. UNAVAILABLE when ZeroMQ fails.
  [[nodiscard]] absl::Status ServeReplay();

  // Engine restart: seq back to 0 and the replay buffer emptied. With
  // `rebind`, the sockets are closed (queued messages dropped) and bound again
  // on the same ports, so subscribers see the connection drop and reconnect.
  [[nodiscard]] absl::Status Restart(bool rebind);

  uint64_t next_seq() const { return next_seq_; }
  uint32_t events_port() const { return options_.events_port; }
  std::optional<uint32_t> replay_port() const {
    return options_.replay ? std::optional<uint32_t>(options_.replay_port) : std::nullopt;
  }
  const PublisherCounters& counters() const { return counters_; }

 private:
  Publisher(zmq::context_t& context, PublisherOptions options);
  // Creates the sockets and binds them, resolving ephemeral ports. With
  // `retry`, retries briefly while a port is still held by sockets just closed.
  [[nodiscard]] absl::Status Bind(bool retry);
  void SendReplay(const zmq::message_t& identity, uint64_t start_seq);

  zmq::context_t& context_;
  PublisherOptions options_;  // ports resolved by the first Bind()
  std::optional<zmq::socket_t> pub_;
  std::optional<zmq::socket_t> router_;
  uint64_t next_seq_ = 0;
  // Consecutive seqs, oldest first. Payloads are shared with ZeroMQ's queues (zero copy).
  std::deque<std::pair<uint64_t, std::shared_ptr<const std::string>>> buffer_;
  size_t buffer_bytes_ = 0;
  PublisherCounters counters_;
};

}  // namespace kvindex::sim
