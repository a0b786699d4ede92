#pragma once

// BindReceiver: bind mode. One SUB socket bound at a central endpoint (e.g.
// "tcp://10.0.0.5:5557") where the engines of pods that say engine_connects
// connect their PUB sockets; each message is routed by its topic
// `kv@<pod-ip>[:<port>]@<model>` to the subscription of the pod and dp rank
// at that IP, port (events_port + rank) and model. A topic without a port
// names rank 0 of the one pod at that IP serving that model. A topic that
// names no route, or more than one (two pods claiming the same IP, port and
// model), is counted as unrouted and dropped: never indexed under another pod
// or model. Sequence numbers are tracked by the subscription, i.e. per topic.
// Messages with a malformed shape are counted and dropped. The endpoint
// authenticates nobody: whoever reaches it can publish for any pod.
//
// Thread safety: created, used and destroyed on one IoThread, the same as the
// Subscribers it routes to. BindCounters may be read from any thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/internal/worker_subscription.h"
#include "core/ingest/zmq_wire.h"
#include "zmq.hpp"

namespace kvindex {

struct BindTopic {
  std::string ip;                 // normalised IP literal
  std::optional<uint32_t> port;   // events port of the sender's rank
  std::string model;
};

// Parses `kv@<ip>[:<port>]@<model>` (IPv6 may be bracketed: kv@[fd00::1]:5557@m).
// nullopt when the topic does not have that shape or the IP is not a literal.
std::optional<BindTopic> ParseBindTopic(std::string_view topic);

// Canonical text of an IP literal (inet_ntop of inet_pton); nullopt if not one.
std::optional<std::string> NormalizeIp(std::string_view ip);

// Outlives the receiver, so totals stay readable after Stop.
struct BindCounters {
  std::atomic<uint64_t> messages{0};         // routed to a worker
  std::atomic<uint64_t> unknown_senders{0};  // topic of no known pod / rank
  std::atomic<uint64_t> bad_frames{0};       // not [topic, seq8, payload]
};

class BindReceiver : public IoTask {
 public:
  // Binds a SUB socket (every topic) at `endpoint`. INVALID_ARGUMENT / UNAVAILABLE
  // with ZeroMQ's reason when it cannot bind. `counters` must outlive the receiver.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BindReceiver>> Create(zmq::context_t& context,
                                                              const std::string& endpoint,
                                                              BindCounters* counters,
                                                              const ZmqTuning& tuning = {});

  // Routes messages of (ip, port, model) -- and of (ip, no port, model) when
  // `rank0` -- to `subscriber` until Unroute(subscriber).
  void Route(const std::string& ip, uint32_t port, bool rank0, const std::string& model,
             WorkerSubscription* subscriber);
  void Unroute(WorkerSubscription* subscriber);

  // The endpoint actually bound (port resolved when bound to port 0 / "*").
  const std::string& endpoint() const { return endpoint_; }

  // IoTask.
  void CollectSockets(std::vector<zmq::socket_ref>& sockets) override;
  void OnReady(absl::Time now) override;

 private:
  BindReceiver(zmq::socket_t socket, std::string endpoint, BindCounters* counters);
  static std::string RouteKey(absl::string_view ip, std::optional<uint32_t> port, absl::string_view model);

  zmq::socket_t socket_;
  const std::string endpoint_;
  BindCounters* const counters_;
  // Every subscription claiming a key; a message is routed only when exactly one does.
  absl::flat_hash_map<std::string, std::vector<WorkerSubscription*>> routes_;
};

}  // namespace kvindex
