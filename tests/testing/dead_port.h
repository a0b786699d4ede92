#pragma once

// A TCP endpoint that is dead for as long as the object lives, for tests that
// need a refused connection without probing for a free port (a probed port is
// released before use, so a concurrent test may take it, or bring it alive).

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace kvindex::testutil {

// A socket bound to 127.0.0.1 on a port the kernel picks, never listening:
// connecting to it is refused. Closed (the port released) on destruction.
class DeadPort {
 public:
  enum class Takeover {
    // Nobody else can bind the port while this lives (no SO_REUSEADDR).
    kNever,
    // SO_REUSEADDR: a listener that also sets it (as ZeroMQ's do) can bind the
    // port while this lives, so a test can bring the endpoint alive later.
    kByReuseAddr,
  };

  // UNAVAILABLE with errno's text when no socket can be bound.
  static absl::StatusOr<std::unique_ptr<DeadPort>> Bind(Takeover takeover = Takeover::kNever);
  ~DeadPort();
  DeadPort(const DeadPort&) = delete;
  DeadPort& operator=(const DeadPort&) = delete;

  uint32_t port() const { return port_; }

 private:
  DeadPort(int fd, uint32_t port) : fd_(fd), port_(port) {}
  const int fd_;
  const uint32_t port_;
};

}  // namespace kvindex::testutil
