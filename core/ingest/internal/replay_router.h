#pragma once

// ReplayRouter: the replay requests of every worker on one IoThread, over one
// ROUTER socket. A request gets a connection of its own to the engine's replay
// socket, named by a routing id of ours (ZMQ_CONNECT_ROUTING_ID), so a reply
// reaches the worker that asked, and a late reply to a request that was
// cancelled reaches nobody (counted, dropped). A replay thus costs a worker one
// TCP connection while it is out and no socket of its own: the engine's side
// sees what a DEALER would send, [routing id, "", seq]. ZeroMQ queues a
// request until its connection is up (and reconnects with backoff), as it
// would for a DEALER. Two workers replaying from the same endpoint at once get
// two ROUTER sockets (ZeroMQ disconnects by endpoint); the extra one closes
// when it has no connection left.
//
// Thread safety: created on any thread, then used and destroyed on its
// IoThread only. Clients must Cancel() before they are destroyed.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/ingest/internal/io_thread.h"
#include "core/ingest/zmq_wire.h"
#include "zmq.hpp"

namespace kvindex {

// Who asked for a replay.
class ReplayClient {
 public:
  virtual ~ReplayClient() = default;
  // One message of the engine's replay socket for this client's current
  // request, routing id removed: its first frames (at most kMaxReplayFrames)
  // and its frame count `total`. Called on the I/O thread, inside the router's
  // turn; the client may Request or Cancel from here.
  virtual void OnReplayReply(absl::Span<const zmq::message_t> frames, size_t total, absl::Time now) = 0;
};

inline constexpr size_t kMaxReplayFrames = 4;

class ReplayRouter : public IoTask {
 public:
  explicit ReplayRouter(zmq::context_t& context, ZmqTuning tuning = {});
  ~ReplayRouter() override;
  ReplayRouter(const ReplayRouter&) = delete;
  ReplayRouter& operator=(const ReplayRouter&) = delete;

  // Cancels `client`'s request, if any, then connects to `endpoint` and queues
  // a request for batches >= `from_seq`. False (logged) when ZeroMQ refuses
  // (bad endpoint, out of sockets or files, queue full).
  bool Request(ReplayClient* client, const std::string& endpoint, uint64_t from_seq);

  // Disconnects `client`'s request; replies still on their way are dropped.
  // No-op when it has none.
  void Cancel(ReplayClient* client);

  // Replies that arrived for no current request.
  uint64_t late_replies() const { return late_replies_; }

  // IoTask.
  void CollectSockets(std::vector<zmq::socket_ref>& sockets) override;
  void OnReady(absl::Time now) override;

 private:
  struct Socket {
    zmq::socket_t socket;
    absl::flat_hash_set<std::string> endpoints;  // connected, one request each
  };
  struct Outstanding {
    Socket* socket = nullptr;
    std::string endpoint;
    std::string routing_id;
  };

  // A socket not yet connected to `endpoint`, made when none is. Throws zmq::error_t.
  Socket& SocketFor(const std::string& endpoint);
  void Read(Socket& socket, absl::Time now);
  // Closes the extra sockets left without connections.
  void CloseIdleSockets();

  zmq::context_t& context_;
  const ZmqTuning tuning_;
  std::vector<std::unique_ptr<Socket>> sockets_;
  absl::flat_hash_map<ReplayClient*, Outstanding> requests_;
  absl::flat_hash_map<std::string, ReplayClient*> clients_;  // by routing id
  uint64_t next_routing_id_ = 0;
  uint64_t late_replies_ = 0;
};

}  // namespace kvindex
