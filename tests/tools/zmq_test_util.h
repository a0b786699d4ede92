#pragma once

// ZeroMQ helpers for the simulator's tests: the client side of the engine
// protocol (SUB for live messages, DEALER for replay), written independently of
// kvindex's Subscriber so that the two check each other.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/testing/wait.h"
#include "zmq.hpp"

namespace kvindex::sim::testing {

using Frames = std::vector<std::string>;

inline std::string SeqBytes(uint64_t seq) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, seq >>= 8) out[i] = static_cast<char>(seq & 0xff);
  return out;
}

// Big-endian value of an 8-byte frame; nullopt for any other size.
inline std::optional<uint64_t> SeqOf(const std::string& frame) {
  if (frame.size() != 8) return std::nullopt;
  uint64_t seq = 0;
  for (unsigned char c : frame) seq = (seq << 8) | c;
  return seq;
}

// One whole multipart message, waiting up to `timeout`; nullopt when none came.
inline std::optional<Frames> Recv(zmq::socket_t& socket, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
  Frames frames;
  zmq::message_t frame;
  do {
    if (!socket.recv(frame, zmq::recv_flags::none)) break;
    frames.push_back(frame.to_string());
  } while (frame.more());
  return frames;
}

inline zmq::socket_t Sub(zmq::context_t& context, uint32_t port) {
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::rcvhwm, 0);
  sub.set(zmq::sockopt::subscribe, "");
  sub.connect("tcp://127.0.0.1:" + std::to_string(port));
  return sub;
}

inline zmq::socket_t Dealer(zmq::context_t& context, uint32_t port) {
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect("tcp://127.0.0.1:" + std::to_string(port));
  return dealer;
}

// Asks for replay from `start` and collects the replies up to and including the
// end marker. `serve` runs between waits (it answers on the engine's side).
// Empty when no end marker came within a few seconds.
inline std::vector<Frames> Replay(zmq::socket_t& dealer, uint64_t start, const std::function<void()>& serve) {
  dealer.send(zmq::message_t(), zmq::send_flags::sndmore);
  dealer.send(zmq::message_t(SeqBytes(start)), zmq::send_flags::none);
  std::vector<Frames> replies;
  const bool ended = testutil::WaitFor(
      [&] {
        serve();
        while (auto frames = Recv(dealer, std::chrono::milliseconds(5))) {
          replies.push_back(*frames);
          if (frames->size() >= 3 && SeqOf((*frames)[frames->size() - 2]) == ~uint64_t{0}) return true;
        }
        return false;
      },
      absl::Seconds(5), absl::ZeroDuration());  // Recv paces the loop
  return ended ? replies : std::vector<Frames>{};
}

}  // namespace kvindex::sim::testing
