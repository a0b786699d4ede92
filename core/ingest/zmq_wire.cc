#include "core/ingest/zmq_wire.h"

#include "absl/strings/str_cat.h"

namespace kvindex {

void TuneSocket(zmq::socket_t& socket, const ZmqTuning& tuning) {
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::ipv6, 1);
  socket.set(zmq::sockopt::reconnect_ivl, tuning.reconnect_ivl_ms);
  socket.set(zmq::sockopt::reconnect_ivl_max, tuning.reconnect_ivl_max_ms);
  socket.set(zmq::sockopt::heartbeat_ivl, tuning.heartbeat_ivl_ms);
  socket.set(zmq::sockopt::heartbeat_timeout, tuning.heartbeat_timeout_ms);
  socket.set(zmq::sockopt::maxmsgsize, tuning.max_msg_bytes);
  socket.set(zmq::sockopt::rcvhwm, tuning.rcvhwm);
}

std::string TcpEndpoint(std::string_view ip, uint32_t port) {
  const bool v6 = ip.find(':') != std::string_view::npos;
  return v6 ? absl::StrCat("tcp://[", absl::string_view(ip.data(), ip.size()), "]:", port)
            : absl::StrCat("tcp://", absl::string_view(ip.data(), ip.size()), ":", port);
}

std::string SeqFrame(uint64_t seq) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(seq & 0xff);
    seq >>= 8;
  }
  return out;
}

std::optional<uint64_t> ParseSeqFrame(const zmq::message_t& frame) {
  if (frame.size() != 8) return std::nullopt;
  const auto* bytes = static_cast<const unsigned char*>(frame.data());
  uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq = (seq << 8) | bytes[i];
  return seq;
}

}  // namespace kvindex
