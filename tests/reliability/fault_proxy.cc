#include "tests/reliability/fault_proxy.h"

#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvindex::testing {
namespace {

uint32_t BoundPort(zmq::socket_t& socket) {
  const std::string endpoint = socket.get(zmq::sockopt::last_endpoint);
  uint32_t port = 0;
  (void)absl::SimpleAtoi(endpoint.substr(endpoint.rfind(':') + 1), &port);
  return port;
}

std::string Seq(uint64_t seq, size_t bytes = 8) {
  std::string out(bytes, '\0');
  for (size_t i = bytes; i-- > 0;) {
    out[i] = static_cast<char>(seq & 0xff);
    seq >>= 8;
  }
  return out;
}

}  // namespace

std::vector<std::string> FaultProxy::Malformed(uint64_t n) {
  switch (n % 10) {
    case 0: return {"garbage"};                                       // one frame
    case 1: return {"", Seq(1)};                                      // two frames
    case 2: return {"", Seq(2), "\x93\xcb", "extra"};                 // four frames
    case 3: return {"", Seq(3, 7), "\x92\x00\x90"};                   // 7-byte seq
    case 4: return {"", Seq(4, 9), "\x92\x00\x90"};                   // 9-byte seq
    case 5: return {"", "", "\x92\x00\x90"};                          // empty seq
    case 6: return {"", Seq(0x8000000000000000ull + n), "\x92\x00\x90"};  // seq beyond int64
    case 7: return {"", Seq(~uint64_t{0}), ""};                       // a replay end marker on the live socket
    case 8: return std::vector<std::string>(12, "x");                 // many frames
    default: return {std::string(4096, '\xc1'), "not-a-seq", std::string(4096, '\xff')};
  }
}

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(const std::string& engine_endpoint,
                                                              FaultPolicy policy) {
  std::unique_ptr<FaultProxy> proxy(new FaultProxy(std::move(policy)));
  try {
    proxy->sub_ = std::make_unique<zmq::socket_t>(proxy->context_, zmq::socket_type::sub);
    proxy->sub_->set(zmq::sockopt::linger, 0);
    proxy->sub_->set(zmq::sockopt::rcvhwm, 0);
    proxy->sub_->set(zmq::sockopt::subscribe, "");
    proxy->sub_->connect(engine_endpoint);
    // An XPUB (a PUB on the wire) so that the policy starts counting once kvindex has subscribed.
    proxy->pub_ = std::make_unique<zmq::socket_t>(proxy->context_, zmq::socket_type::xpub);
    proxy->pub_->set(zmq::sockopt::linger, 0);
    proxy->pub_->set(zmq::sockopt::sndhwm, 0);  // never drop what the policy does not
    proxy->pub_->bind("tcp://127.0.0.1:0");
    proxy->port_ = BoundPort(*proxy->pub_);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("fault proxy: ", e.what()));
  }
  proxy->thread_ = std::thread([p = proxy.get()] { p->Run(); });
  return proxy;
}

FaultProxy::~FaultProxy() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void FaultProxy::Run() {
  uint64_t index = 0;
  std::vector<zmq::message_t> frames;
  while (!stop_.load()) {
    zmq::pollitem_t items[] = {{sub_->handle(), 0, ZMQ_POLLIN, 0}, {pub_->handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(50));
    if ((items[1].revents & ZMQ_POLLIN) != 0) {
      zmq::message_t subscription;
      while (pub_->recv(subscription, zmq::recv_flags::dontwait)) {
        if (subscription.size() > 0 && static_cast<const char*>(subscription.data())[0] == 1) subscribed_ = true;
      }
    }
    if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
    frames.clear();
    do {
      frames.emplace_back();
      (void)sub_->recv(frames.back(), zmq::recv_flags::none);
    } while (frames.back().more());
    if (!subscribed_.load()) {
      // Nobody listens yet: what the engine sends now is lost to everyone alike.
      continue;
    }
    const uint64_t n = index++;
    if (policy_.drop.count(n) > 0) {
      ++dropped_;
      continue;
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      pub_->send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    ++forwarded_;
    for (uint32_t k = 0; k < policy_.malformed_per_message && malformed_.load() < policy_.max_malformed; ++k) {
      const std::vector<std::string> bad = Malformed(malformed_.load());
      for (size_t i = 0; i < bad.size(); ++i) {
        pub_->send(zmq::buffer(bad[i]), i + 1 < bad.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
      ++malformed_;
    }
  }
}

absl::StatusOr<std::unique_ptr<SilentReplay>> SilentReplay::Start() {
  std::unique_ptr<SilentReplay> replay(new SilentReplay());
  try {
    replay->router_ = std::make_unique<zmq::socket_t>(replay->context_, zmq::socket_type::router);
    replay->router_->set(zmq::sockopt::linger, 0);
    replay->router_->bind("tcp://127.0.0.1:0");
    replay->port_ = BoundPort(*replay->router_);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("silent replay: ", e.what()));
  }
  replay->thread_ = std::thread([r = replay.get()] { r->Run(); });
  return replay;
}

SilentReplay::~SilentReplay() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void SilentReplay::Run() {
  while (!stop_.load()) {
    zmq::pollitem_t item{router_->handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(50));
    if ((item.revents & ZMQ_POLLIN) == 0) continue;
    zmq::message_t frame;
    do {
      (void)router_->recv(frame, zmq::recv_flags::none);
    } while (frame.more());
    ++requests_;  // read, never answered
  }
}

}  // namespace kvindex::testing
