#pragma once

// The ZeroMQ side of the engines' wire (see ../shared/wire/README.md): socket
// options, endpoints and the 8-byte seq frame, shared by the subscriber and
// the simulated engines. Free functions; any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "zmq.hpp"

namespace kvindex {

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

}  // namespace kvindex
