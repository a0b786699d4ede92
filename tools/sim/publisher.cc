#include "tools/sim/publisher.h"

#include <zmq.h>

#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kvindex::sim {
namespace {

// Requests answered per ServeReplay() call, so one client cannot starve publishing.
constexpr int kMaxRequestsPerCall = 64;
// Frames kept from one request; longer requests are malformed anyway.
constexpr size_t kMaxFrames = 4;
// Rebinding a port right after closing its socket may find it still held.
constexpr int kBindAttempts = 100;
constexpr auto kBindRetryDelay = std::chrono::milliseconds(20);

// A message owning a reference to `payload`: ZeroMQ sends it without copying
// and drops the reference (from its I/O thread) once sent.
zmq::message_t Shared(const std::shared_ptr<const std::string>& payload) {
  auto* ref = new std::shared_ptr<const std::string>(payload);
  return zmq::message_t(
      const_cast<char*>((*ref)->data()), (*ref)->size(),
      [](void*, void* hint) { delete static_cast<std::shared_ptr<const std::string>*>(hint); }, ref);
}

std::string Endpoint(const std::string& host, uint32_t port) {
  const std::string port_text = port == 0 ? "*" : absl::StrCat(port);
  return host.find(':') != std::string::npos ? absl::StrCat("tcp://[", host, "]:", port_text)
                                                  : absl::StrCat("tcp://", host, ":", port_text);
}

// Port of the socket's last bound endpoint ("tcp://host:port").
absl::StatusOr<uint32_t> BoundPort(zmq::socket_t& socket) {
  const std::string endpoint = socket.get(zmq::sockopt::last_endpoint);
  uint32_t port = 0;
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port)) {
    return absl::InternalError(absl::StrCat("cannot read the port of \"", endpoint, "\""));
  }
  return port;
}

// Binds; with `retry`, retries while the address is in use (a socket of ours just closed).
absl::StatusOr<uint32_t> BindWithRetry(zmq::socket_t& socket, const std::string& host, uint32_t port, bool retry) {
  const std::string endpoint = Endpoint(host, port);
  for (int attempt = 1;; ++attempt) {
    try {
      socket.bind(endpoint);
      return BoundPort(socket);
    } catch (const zmq::error_t& e) {
      if (!retry || e.num() != EADDRINUSE || port == 0 || attempt >= kBindAttempts) {
        return absl::UnavailableError(absl::StrCat("bind ", endpoint, ": ", e.what()));
      }
    }
    std::this_thread::sleep_for(kBindRetryDelay);
  }
}

}  // namespace

Publisher::Publisher(zmq::context_t& context, PublisherOptions options)
    : context_(context), options_(std::move(options)) {}

Publisher::~Publisher() = default;

absl::StatusOr<std::unique_ptr<Publisher>> Publisher::Create(zmq::context_t& context, PublisherOptions options) {
  std::unique_ptr<Publisher> publisher(new Publisher(context, std::move(options)));
  if (absl::Status status = publisher->Bind(/*retry=*/false); !status.ok()) return status;
  return publisher;
}

absl::Status Publisher::Bind(bool retry) {
  const bool v6 = options_.host.find(':') != std::string::npos;
  try {
    pub_.emplace(context_, zmq::socket_type::pub);
    pub_->set(zmq::sockopt::sndhwm, options_.sndhwm);
    pub_->set(zmq::sockopt::linger, options_.linger_ms);
    if (v6) pub_->set(zmq::sockopt::ipv6, 1);
    absl::StatusOr<uint32_t> port = BindWithRetry(*pub_, options_.host, options_.events_port, retry);
    if (!port.ok()) return port.status();
    options_.events_port = *port;
    if (options_.replay) {
      router_.emplace(context_, zmq::socket_type::router);
      router_->set(zmq::sockopt::sndhwm, 0);  // a replay must not be cut short by the HWM
      router_->set(zmq::sockopt::linger, 0);
      if (v6) router_->set(zmq::sockopt::ipv6, 1);
      port = BindWithRetry(*router_, options_.host, options_.replay_port, retry);
      if (!port.ok()) return port.status();
      options_.replay_port = *port;
    }
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("sockets on ", options_.host, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status Publisher::Publish(std::string payload) {
  const uint64_t seq = next_seq_++;
  ++counters_.batches;
  counters_.bytes += payload.size();
  auto shared = std::make_shared<const std::string>(std::move(payload));
  absl::Status status;
  if (!pub_.has_value()) {  // a failed rebind left no socket
    status = absl::UnavailableError(absl::StrCat("publish seq ", seq, ": no PUB socket (rebind failed)"));
  } else {
    try {
      pub_->send(zmq::buffer(options_.topic), zmq::send_flags::sndmore);
      pub_->send(zmq::message_t(SeqFrame(seq)), zmq::send_flags::sndmore);
      pub_->send(Shared(shared), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      status = absl::UnavailableError(absl::StrCat("publish seq ", seq, ": ", e.what()));
    }
  }
  if (!status.ok()) ++counters_.send_errors;
  if (options_.replay && options_.replay_buffer_batches > 0) {
    buffer_bytes_ += shared->size();
    buffer_.emplace_back(seq, std::move(shared));
    while (buffer_.size() > 1 &&
           (buffer_.size() > options_.replay_buffer_batches || buffer_bytes_ > options_.replay_buffer_bytes)) {
      buffer_bytes_ -= buffer_.front().second->size();
      buffer_.pop_front();
    }
  }
  return status;
}

zmq::pollitem_t Publisher::ReplayPollItem() {
  if (!router_.has_value()) return zmq::pollitem_t{nullptr, 0, 0, 0};
  return zmq::pollitem_t{router_->handle(), 0, ZMQ_POLLIN, 0};
}

void Publisher::SendReplay(const zmq::message_t& identity, uint64_t start_seq) {
  // The end marker's topic frame is empty (wire README).
  auto send_head = [&](bool end) {
    router_->send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore);
    router_->send(zmq::message_t(), zmq::send_flags::sndmore);
    if (options_.reply_form == ReplyForm::kTopicSeqPayload) {
      router_->send(end ? zmq::message_t() : zmq::message_t(options_.topic), zmq::send_flags::sndmore);
    }
  };
  if (!buffer_.empty() && start_seq < next_seq_) {
    const uint64_t first = buffer_.front().first;
    for (size_t i = start_seq > first ? start_seq - first : 0; i < buffer_.size(); ++i) {
      const auto& [seq, payload] = buffer_[i];
      send_head(/*end=*/false);
      router_->send(zmq::message_t(SeqFrame(seq)), zmq::send_flags::sndmore);
      router_->send(Shared(payload), zmq::send_flags::none);
      ++counters_.replayed_batches;
    }
  }
  send_head(/*end=*/true);
  router_->send(zmq::message_t(SeqFrame(kReplayEndSeq)), zmq::send_flags::sndmore);
  router_->send(zmq::message_t(), zmq::send_flags::none);
}

absl::Status Publisher::ServeReplay() {
  if (!router_.has_value()) return absl::OkStatus();
  try {
    std::vector<zmq::message_t> frames;
    for (int n = 0; n < kMaxRequestsPerCall; ++n) {
      frames.clear();
      zmq::message_t frame;
      if (!router_->recv(frame, zmq::recv_flags::dontwait)) break;
      size_t total = 0;
      while (true) {
        ++total;
        const bool more = frame.more();
        if (frames.size() < kMaxFrames) frames.push_back(std::move(frame));
        if (!more) break;
        frame = zmq::message_t();
        if (!router_->recv(frame, zmq::recv_flags::none)) break;
      }
      // [identity, "", start_seq]
      if (total != 3 || frames[1].size() != 0 || frames[2].size() != 8) {
        ++counters_.bad_requests;
        spdlog::debug("replay {}: dropped a malformed request ({} frames)", options_.replay_port, total);
        continue;
      }
      const auto* bytes = static_cast<const unsigned char*>(frames[2].data());
      uint64_t start = 0;
      for (int i = 0; i < 8; ++i) start = (start << 8) | bytes[i];
      ++counters_.replay_requests;
      SendReplay(frames[0], start);
    }
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("replay on port ", options_.replay_port, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status Publisher::Restart(bool rebind) {
  ++counters_.restarts;
  next_seq_ = 0;
  buffer_.clear();
  buffer_bytes_ = 0;
  if (!rebind) return absl::OkStatus();
  try {
    if (pub_.has_value()) pub_->set(zmq::sockopt::linger, 0);
  } catch (const zmq::error_t&) {
    // Closing below drops the queue either way.
  }
  pub_.reset();
  router_.reset();
  return Bind(/*retry=*/true);
}

}  // namespace kvindex::sim
