#include "server/metrics_http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "spdlog/spdlog.h"

namespace kvindex::server {
namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a
// second process bind the same port silently instead of failing.
void ExclusiveSocketOptions(int sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

class MetricsHttpServer::Impl {
 public:
  Impl(std::function<std::string()> render, int threads) {
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    server_.set_socket_options(ExclusiveSocketOptions);
    // One request per connection and short timeouts: Stop() never waits on an
    // idle keep-alive connection or a client that sends nothing.
    server_.set_keep_alive_max_count(1);
    server_.set_keep_alive_timeout(1);
    server_.set_read_timeout(1, 0);
    server_.set_write_timeout(5, 0);
    server_.set_payload_max_length(64 << 10);
    server_.Get("/metrics", [render = std::move(render)](const httplib::Request&, httplib::Response& response) {
      response.set_content(render(), kContentType);
    });
  }

  // The bound port, or -1.
  int Bind(const std::string& host, int port) {
    if (port == 0) return server_.bind_to_any_port(host);
    return server_.bind_to_port(host, port) ? port : -1;
  }

  void Serve() {
    thread_ = std::thread([this] {
      if (!server_.listen_after_bind()) spdlog::error("metrics endpoint stopped accepting connections");
      finished_.store(true);
    });
  }

  void Stop() {
    if (!thread_.joinable()) return;
    // httplib's stop() is a no-op until the accept loop runs: wait for it (or
    // for the loop to have ended on its own). The loop starts at once.
    while (!server_.is_running() && !finished_.load()) std::this_thread::yield();
    server_.stop();
    thread_.join();
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
};

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(std::string_view listen_view) {
  const std::string listen(listen_view);
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("\"", listen, "\": bad port \"", port_text, "\""));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", listen, "\": bracket IPv6 addresses, e.g. [::]:9090"));
  }
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, port);
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(std::string_view listen,
                                                                            std::function<std::string()> render,
                                                                            int threads) {
  absl::StatusOr<std::pair<std::string, int>> address = SplitHostPort(listen);
  if (!address.ok()) return address.status();
  auto impl = std::make_unique<Impl>(std::move(render), std::max(threads, 1));
  const int port = impl->Bind(address->first, address->second);
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", std::string(listen), " (address in use or not local?)"));
  }
  impl->Serve();
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(std::move(impl), port));
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<Impl> impl, int port) : impl_(std::move(impl)), port_(port) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() { impl_->Stop(); }

}  // namespace kvindex::server
