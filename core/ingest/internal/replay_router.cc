#include "core/ingest/internal/replay_router.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kvindex {
namespace {

// Messages read per socket per turn, so one engine's replay cannot starve the others.
constexpr int kMaxMessagesPerTurn = 256;

// "kv" and 8 bytes: a routing id may not start with a zero byte (libzmq's own).
std::string RoutingId(uint64_t n) {
  std::string id = "kv";
  for (int shift = 56; shift >= 0; shift -= 8) id.push_back(static_cast<char>((n >> shift) & 0xff));
  return id;
}

}  // namespace

ReplayRouter::ReplayRouter(zmq::context_t& context, ZmqTuning tuning) : context_(context), tuning_(tuning) {}

ReplayRouter::~ReplayRouter() = default;

ReplayRouter::Socket& ReplayRouter::SocketFor(const std::string& endpoint) {
  for (auto& socket : sockets_) {
    if (!socket->endpoints.contains(endpoint)) return *socket;
  }
  auto socket = std::make_unique<Socket>(Socket{zmq::socket_t(context_, zmq::socket_type::router), {}});
  TuneSocket(socket->socket, tuning_);
  // A request to a connection that is gone fails instead of vanishing.
  socket->socket.set(zmq::sockopt::router_mandatory, 1);
  sockets_.push_back(std::move(socket));
  RequestTurn();  // the I/O thread watches a task's sockets as of its last turn
  return *sockets_.back();
}

bool ReplayRouter::Request(ReplayClient* client, const std::string& endpoint, uint64_t from_seq) {
  Cancel(client);
  try {
    Socket& socket = SocketFor(endpoint);
    std::string id = RoutingId(next_routing_id_++);
    socket.socket.set(zmq::sockopt::connect_routing_id, id);
    socket.socket.connect(endpoint);
    socket.endpoints.insert(endpoint);
    clients_[id] = client;
    requests_[client] = Outstanding{&socket, endpoint, id};
    // The connection's pipe exists from connect() on (ZMQ_IMMEDIATE off), so
    // ZeroMQ holds the request until the engine is reached.
    const std::string seq = SeqFrame(from_seq);
    if (!socket.socket.send(zmq::buffer(id), zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !socket.socket.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !socket.socket.send(zmq::buffer(seq), zmq::send_flags::dontwait)) {
      spdlog::error("replay request to {}: queue full", endpoint);
      Cancel(client);
      return false;
    }
    return true;
  } catch (const zmq::error_t& e) {
    spdlog::error("replay request to {}: {}", endpoint, e.what());
    Cancel(client);
    return false;
  }
}

void ReplayRouter::Cancel(ReplayClient* client) {
  auto it = requests_.find(client);
  if (it == requests_.end()) return;
  Outstanding request = std::move(it->second);
  requests_.erase(it);
  clients_.erase(request.routing_id);
  if (request.socket->endpoints.erase(request.endpoint) == 0) return;
  try {
    request.socket->socket.disconnect(request.endpoint);
  } catch (const zmq::error_t& e) {
    // Not connected (connect failed half way): nothing to undo.
    spdlog::debug("replay disconnect from {}: {}", request.endpoint, e.what());
  }
}

void ReplayRouter::CollectSockets(std::vector<zmq::socket_ref>& sockets) {
  for (auto& socket : sockets_) sockets.push_back(socket->socket);
}

void ReplayRouter::OnReady(absl::Time now) {
  // Index, not iterator: a client may Request from OnReplayReply, adding a socket.
  for (size_t i = 0; i < sockets_.size(); ++i) Read(*sockets_[i], now);
  CloseIdleSockets();
}

void ReplayRouter::Read(Socket& socket, absl::Time now) {
  std::vector<zmq::message_t> frames;
  try {
    for (int i = 0; i < kMaxMessagesPerTurn; ++i) {
      zmq::message_t id;
      if (!socket.socket.recv(id, zmq::recv_flags::dontwait)) return;
      frames.clear();
      size_t total = 0;
      bool more = id.more();
      while (more) {
        zmq::message_t frame;
        // The remaining parts of a message are always there once the first is.
        if (!socket.socket.recv(frame, zmq::recv_flags::none)) break;
        more = frame.more();
        ++total;
        if (frames.size() < kMaxReplayFrames) frames.push_back(std::move(frame));
      }
      auto client = clients_.find(absl::string_view(static_cast<const char*>(id.data()), id.size()));
      if (client == clients_.end()) {
        ++late_replies_;
        continue;
      }
      client->second->OnReplayReply(frames, total, now);
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("replay socket: {}", e.what());
  }
}

void ReplayRouter::CloseIdleSockets() {
  // The first socket stays: most turns would otherwise close and reopen it.
  for (size_t i = sockets_.size(); i > 1; --i) {
    if (sockets_[i - 1]->endpoints.empty()) sockets_.erase(sockets_.begin() + static_cast<ptrdiff_t>(i - 1));
  }
}

}  // namespace kvindex
