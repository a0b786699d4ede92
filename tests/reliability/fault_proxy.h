#pragma once

// Fault injection between an engine and kvindex, with real ZeroMQ sockets:
//  - FaultProxy: a SUB connected to the engine's PUB, re-publishing every
//    message on its own PUB (which kvindex subscribes to instead), except the
//    live messages its policy drops, and with malformed messages injected
//    after good ones. Messages are counted from kvindex's subscription on;
//  - SilentReplay: a ROUTER that reads replay requests and never answers.
//
// Thread safety: the sockets live on a thread of their own; the counters may
// be read from any thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "zmq.hpp"

namespace kvindex::testing {

struct FaultPolicy {
  // 0-based indices (in the order the proxy receives them) of the engine's
  // messages not forwarded: what a full PUB queue or a lossy network does.
  std::set<uint64_t> drop;
  // Malformed messages sent after each forwarded message, until `max_malformed`.
  uint32_t malformed_per_message = 0;
  uint64_t max_malformed = 0;
};

class FaultProxy {
 public:
  // Connects to `engine_endpoint` and binds 127.0.0.1 on an ephemeral port.
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(const std::string& engine_endpoint, FaultPolicy policy);
  ~FaultProxy();

  uint32_t port() const { return port_; }
  uint64_t forwarded() const { return forwarded_.load(); }
  uint64_t dropped() const { return dropped_.load(); }
  uint64_t malformed() const { return malformed_.load(); }
  // Whether kvindex has subscribed (the policy counts messages from then on).
  bool subscribed() const { return subscribed_.load(); }

  // The n-th malformed message (frames), cycling through every kind of bad shape.
  static std::vector<std::string> Malformed(uint64_t n);

 private:
  FaultProxy(FaultPolicy policy) : policy_(std::move(policy)) {}
  void Run();

  const FaultPolicy policy_;
  zmq::context_t context_{1};
  std::unique_ptr<zmq::socket_t> sub_;
  std::unique_ptr<zmq::socket_t> pub_;
  uint32_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> subscribed_{false};
  std::atomic<uint64_t> forwarded_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> malformed_{0};
  std::thread thread_;
};

class SilentReplay {
 public:
  static absl::StatusOr<std::unique_ptr<SilentReplay>> Start();
  ~SilentReplay();
  uint32_t port() const { return port_; }
  uint64_t requests() const { return requests_.load(); }

 private:
  SilentReplay() = default;
  void Run();

  zmq::context_t context_{1};
  std::unique_ptr<zmq::socket_t> router_;
  uint32_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> requests_{0};
  std::thread thread_;
};

}  // namespace kvindex::testing
