#include "core/ingest/internal/bind_receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kvindex {
namespace {

constexpr int kMaxMessagesPerTurn = 1024;

// True for "tcp://<IPv4 literal>:<port>".
bool IsIpv4Host(const std::string& endpoint) {
  constexpr std::string_view kTcp = "tcp://";
  const size_t colon = endpoint.rfind(':');
  if (endpoint.rfind(kTcp, 0) != 0 || colon == std::string::npos || colon < kTcp.size()) {
    return false;
  }
  const std::string host = endpoint.substr(kTcp.size(), colon - kTcp.size());
  in_addr v4;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1;
}

}  // namespace

std::optional<std::string> NormalizeIp(std::string_view ip) {
  const std::string text(ip);
  char out[INET6_ADDRSTRLEN];
  in6_addr v6;
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    if (inet_ntop(AF_INET, &v4, out, sizeof(out)) == nullptr) return std::nullopt;
    return std::string(out);
  }
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (inet_ntop(AF_INET6, &v6, out, sizeof(out)) == nullptr) return std::nullopt;
    return std::string(out);
  }
  return std::nullopt;
}

std::optional<BindTopic> ParseBindTopic(std::string_view topic) {
  constexpr std::string_view kPrefix = "kv@";
  if (topic.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::string_view rest = topic.substr(kPrefix.size());
  std::string_view address;
  std::string_view model;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const size_t at = rest.find('@', close);
    if (at == std::string_view::npos) return std::nullopt;
    address = rest.substr(0, at);
    model = rest.substr(at + 1);
  } else {
    const size_t at = rest.find('@');
    if (at == std::string_view::npos) return std::nullopt;
    address = rest.substr(0, at);
    model = rest.substr(at + 1);
  }
  if (model.empty()) return std::nullopt;

  std::string_view ip = address;
  std::string_view port_text;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    ip = address.substr(1, close - 1);
    std::string_view after = address.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port_text = after.substr(1);
      if (port_text.empty()) return std::nullopt;
    }
  } else if (address.find(':') == address.rfind(':') && address.find(':') != std::string_view::npos) {
    // Exactly one colon: IPv4 with a port. More than one: a bare IPv6 literal.
    const size_t colon = address.find(':');
    ip = address.substr(0, colon);
    port_text = address.substr(colon + 1);
    if (port_text.empty()) return std::nullopt;
  }
  BindTopic out;
  std::optional<std::string> normal = NormalizeIp(ip);
  if (!normal.has_value()) return std::nullopt;
  out.ip = *std::move(normal);
  if (!port_text.empty()) {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(absl::string_view(port_text.data(), port_text.size()), &port) ||
        port > 65535) {
      return std::nullopt;
    }
    out.port = port;
  }
  out.model = std::string(model);
  return out;
}

absl::StatusOr<std::unique_ptr<BindReceiver>> BindReceiver::Create(zmq::context_t& context,
                                                                   const std::string& endpoint,
                                                                   BindCounters* counters,
                                                                   const ZmqTuning& tuning) {
  try {
    zmq::socket_t socket(context, zmq::socket_type::sub);
    TuneSocket(socket, tuning);
    if (IsIpv4Host(endpoint)) socket.set(zmq::sockopt::ipv6, 0);  // report "tcp://a.b.c.d:port"
    socket.set(zmq::sockopt::subscribe, "");
    socket.bind(endpoint);
    std::string bound = socket.get(zmq::sockopt::last_endpoint);
    return std::unique_ptr<BindReceiver>(new BindReceiver(std::move(socket), bound, counters));
  } catch (const zmq::error_t& e) {
    if (e.num() == EINVAL || e.num() == EPROTONOSUPPORT || e.num() == ENODEV) {
      return absl::InvalidArgumentError(absl::StrCat("events_bind ", endpoint, ": ", e.what()));
    }
    return absl::UnavailableError(absl::StrCat("events_bind ", endpoint, ": ", e.what()));
  }
}

BindReceiver::BindReceiver(zmq::socket_t socket, std::string endpoint, BindCounters* counters)
    : socket_(std::move(socket)), endpoint_(std::move(endpoint)), counters_(counters) {}

std::string BindReceiver::RouteKey(absl::string_view ip, std::optional<uint32_t> port, absl::string_view model) {
  // '|' appears in no IP literal and no port, so the model (anything) goes last.
  return port.has_value() ? absl::StrCat(ip, "|", *port, "|", model) : absl::StrCat(ip, "||", model);
}

void BindReceiver::Route(const std::string& ip, uint32_t port, bool rank0, const std::string& model,
                         WorkerSubscription* subscriber) {
  std::optional<std::string> normal = NormalizeIp(ip);
  if (!normal.has_value()) return;
  routes_[RouteKey(*normal, port, model)].push_back(subscriber);
  if (rank0) routes_[RouteKey(*normal, std::nullopt, model)].push_back(subscriber);
}

void BindReceiver::Unroute(WorkerSubscription* subscriber) {
  for (auto& [key, claimants] : routes_) std::erase(claimants, subscriber);
  absl::erase_if(routes_, [](const auto& entry) { return entry.second.empty(); });
}

void BindReceiver::CollectSockets(std::vector<zmq::socket_ref>& sockets) { sockets.push_back(socket_); }

void BindReceiver::OnReady(absl::Time now) {
  try {
    for (int i = 0; i < kMaxMessagesPerTurn; ++i) {
      std::vector<zmq::message_t> frames;
      zmq::message_t frame;
      if (!socket_.recv(frame, zmq::recv_flags::dontwait)) return;
      size_t total = 0;
      while (true) {
        ++total;
        const bool more = frame.more();
        if (frames.size() < 3) frames.push_back(std::move(frame));
        if (!more) break;
        frame = zmq::message_t();
        if (!socket_.recv(frame, zmq::recv_flags::none)) break;
      }
      std::optional<uint64_t> seq = total == 3 ? ParseSeqFrame(frames[1]) : std::nullopt;
      if (!seq.has_value()) {
        counters_->bad_frames.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      std::optional<BindTopic> topic = ParseBindTopic(frames[0].to_string_view());
      WorkerSubscription* target = nullptr;
      if (topic.has_value()) {
        auto it = routes_.find(RouteKey(topic->ip, topic->port, topic->model));
        if (it != routes_.end() && it->second.size() == 1) target = it->second.front();
      }
      if (target == nullptr) {
        counters_->unknown_senders.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      counters_->messages.fetch_add(1, std::memory_order_relaxed);
      target->OnLiveMessage(*seq, frames[2].to_string_view(), now);
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("bind receiver {}: {}", endpoint_, e.what());
  }
}

}  // namespace kvindex
