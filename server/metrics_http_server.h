#pragma once

// MetricsHttpServer: serves GET /metrics (Prometheus text format 0.0.4) over
// plain HTTP with cpp-httplib, on its own threads. Anything else is 404.
//
// Thread safety: port() may be called from any thread; Stop() is idempotent
// and may be called from any thread but one at a time.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace kvindex::server {

class MetricsHttpServer {
 public:
  // Binds `listen` ("host:port", "[v6]:port"; port 0 picks a free one) and
  // starts serving; `render` produces the body of each scrape and is called on
  // the server's threads (at most `threads` at once). INVALID_ARGUMENT for a
  // malformed address, UNAVAILABLE when it cannot be bound.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(std::string_view listen,
                                                                   std::function<std::string()> render,
                                                                   int threads = 2);

  ~MetricsHttpServer();  // Stop()
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound port (the chosen one when listen said port 0).
  int port() const { return port_; }

  // Stops accepting, finishes the requests in progress and joins the threads.
  // `render` is not called afterwards.
  void Stop();

 private:
  class Impl;
  explicit MetricsHttpServer(std::unique_ptr<Impl> impl, int port);

  std::unique_ptr<Impl> impl_;
  const int port_;
};

// Splits "host:port" / "[v6]:port" into host (brackets removed) and port.
// INVALID_ARGUMENT when there is no port or it is not in 0..65535.
[[nodiscard]] absl::StatusOr<std::pair<std::string, int>> SplitHostPort(std::string_view listen);

}  // namespace kvindex::server
