#include "tests/core/ingest/fake_engine.h"

#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/ingest/internal/subscriber.h"
#include "msgpack.hpp"
#include "zmq_addon.hpp"

namespace kvindex::testing {
namespace {

uint32_t PortOf(const std::string& endpoint) {
  uint32_t port = 0;
  const size_t colon = endpoint.rfind(':');
  if (colon != std::string::npos) (void)absl::SimpleAtoi(endpoint.substr(colon + 1), &port);
  return port;
}

std::string Endpoint(const std::string& host, uint32_t port) {
  const std::string h = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
  return port == 0 ? absl::StrCat("tcp://", h, ":*") : absl::StrCat("tcp://", h, ":", port);
}

}  // namespace

// The engine's sockets, on the engine's IoThread.
class FakeEngine::Task : public IoTask {
 public:
  Task(zmq::context_t& context, const FakeEngineOptions& options)
      : options_(options), pub_(context, zmq::socket_type::xpub) {
    pub_.set(zmq::sockopt::linger, 0);
    pub_.set(zmq::sockopt::ipv6, 1);
    pub_.set(zmq::sockopt::xpub_verboser, 1);
    pub_.set(zmq::sockopt::sndhwm, 100000);
    if (!options.connect_to.empty()) {
      pub_.connect(options.connect_to);
    } else {
      pub_.bind(Endpoint(options.host, options.events_port));
    }
    if (options.replay) {
      router_.emplace(context, zmq::socket_type::router);
      router_->set(zmq::sockopt::linger, 0);
      router_->set(zmq::sockopt::ipv6, 1);
      router_->set(zmq::sockopt::sndhwm, 100000);
      router_->bind(Endpoint(options.host, options.replay_port));
    }
  }

  uint32_t events_port() { return options_.connect_to.empty() ? PortOf(pub_.get(zmq::sockopt::last_endpoint)) : 0; }
  uint32_t replay_port() { return router_ ? PortOf(router_->get(zmq::sockopt::last_endpoint)) : 0; }

  uint64_t Publish(const std::string& payload, bool send) {
    const uint64_t seq = next_seq_++;
    buffer_.emplace_back(seq, payload);
    while (buffer_.size() > options_.buffer_steps) buffer_.pop_front();
    if (send) {
      pub_.send(zmq::buffer(options_.topic), zmq::send_flags::sndmore);
      pub_.send(zmq::buffer(SeqFrame(seq)), zmq::send_flags::sndmore);
      pub_.send(zmq::buffer(payload), zmq::send_flags::none);
    }
    return seq;
  }

  void SendRaw(const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      pub_.send(zmq::buffer(frames[i]),
                i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }

  void Restart() {
    next_seq_ = 0;
    buffer_.clear();
  }
  void ForgetBefore(uint64_t seq) {
    while (!buffer_.empty() && buffer_.front().first < seq) buffer_.pop_front();
  }

  void CollectSockets(std::vector<zmq::socket_ref>& sockets) override {
    sockets.push_back(pub_);
    if (router_) sockets.push_back(*router_);
  }

  void OnReady(absl::Time) override {
    // Subscriptions: [1, topic...] subscribe, [0, topic...] unsubscribe.
    zmq::message_t msg;
    while (pub_.recv(msg, zmq::recv_flags::dontwait)) {
      if (msg.size() > 0) subscribers_ += static_cast<const char*>(msg.data())[0] == 1 ? 1 : -1;
    }
    if (!router_) return;
    std::vector<zmq::message_t> frames;
    while (zmq::recv_multipart(*router_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
      ++replay_requests_;
      if (!muted_ && frames.size() == 3 && frames[2].size() == 8) {
        uint64_t start = 0;
        for (int i = 0; i < 8; ++i) {
          start = (start << 8) | static_cast<const unsigned char*>(frames[2].data())[i];
        }
        const std::string id = frames[0].to_string();
        for (const auto& [seq, payload] : buffer_) {
          if (seq >= start) Reply(id, SeqFrame(seq), payload);
        }
        Reply(id, SeqFrame(kReplayEndSeq), "");
      }
      frames.clear();
    }
  }

  int subscribers_ = 0;
  uint64_t replay_requests_ = 0;
  bool muted_ = false;
  uint64_t next_seq_ = 0;

 private:
  void Reply(const std::string& id, const std::string& seq, const std::string& payload) {
    router_->send(zmq::buffer(id), zmq::send_flags::sndmore);
    router_->send(zmq::str_buffer(""), zmq::send_flags::sndmore);
    if (options_.replay_form == ReplayForm::kFourFrames) {
      // The end marker of the four-frame form has an empty topic.
      router_->send(zmq::buffer(payload.empty() && seq == SeqFrame(kReplayEndSeq) ? "" : options_.topic),
                    zmq::send_flags::sndmore);
    }
    router_->send(zmq::buffer(seq), zmq::send_flags::sndmore);
    router_->send(zmq::buffer(payload), zmq::send_flags::none);
  }

 public:
  FakeEngineOptions options_;

 private:
  zmq::socket_t pub_;
  std::optional<zmq::socket_t> router_;
  std::deque<std::pair<uint64_t, std::string>> buffer_;
};

FakeEngine::FakeEngine(FakeEngineOptions options) : options_(std::move(options)) {}

FakeEngine::~FakeEngine() {
  if (thread_) thread_->Stop();
}

absl::StatusOr<std::unique_ptr<FakeEngine>> FakeEngine::Create(FakeEngineOptions options) {
  std::unique_ptr<FakeEngine> engine(new FakeEngine(options));
  engine->thread_ = std::make_unique<IoThread>(engine->context_, "fake-engine");
  absl::Status status;
  engine->thread_->Post([&](IoThread& io) {
    try {
      auto task = std::make_unique<Task>(io.context(), options);
      engine->events_port_ = task->events_port();
      engine->replay_port_ = task->replay_port();
      io.AddTask(1, std::move(task));
    } catch (const zmq::error_t& e) {
      status = absl::UnavailableError(e.what());
    }
  });
  // Posting a second command and waiting for it orders after the first.
  engine->Run([](Task&) {});
  if (!status.ok()) return status;
  return engine;
}

void FakeEngine::Run(absl::AnyInvocable<void(Task&)> fn) {
  absl::Notification done;
  thread_->Post([&](IoThread& io) {
    if (auto* task = static_cast<Task*>(io.FindTask(1))) fn(*task);
    done.Notify();
  });
  done.WaitForNotification();
}

uint64_t FakeEngine::Publish(const std::string& payload) {
  uint64_t seq = 0;
  Run([&](Task& t) { seq = t.Publish(payload, /*send=*/true); });
  return seq;
}

uint64_t FakeEngine::PublishLost(const std::string& payload) {
  uint64_t seq = 0;
  Run([&](Task& t) { seq = t.Publish(payload, /*send=*/false); });
  return seq;
}

void FakeEngine::SendRaw(const std::vector<std::string>& frames) {
  Run([&](Task& t) { t.SendRaw(frames); });
}

void FakeEngine::Restart() {
  Run([](Task& t) { t.Restart(); });
}

void FakeEngine::SetReplayMuted(bool muted) {
  Run([muted](Task& t) { t.muted_ = muted; });
}

void FakeEngine::SetReplayForm(ReplayForm form) {
  Run([form](Task& t) { t.options_.replay_form = form; });
}

void FakeEngine::ForgetBefore(uint64_t seq) {
  Run([seq](Task& t) { t.ForgetBefore(seq); });
}

int FakeEngine::subscribers() {
  int n = 0;
  Run([&](Task& t) { n = t.subscribers_; });
  return n;
}

bool FakeEngine::WaitForSubscribers(int n, absl::Duration timeout) {
  return WaitFor([&] { return subscribers() >= n; }, timeout);
}

uint64_t FakeEngine::replay_requests() {
  uint64_t n = 0;
  Run([&](Task& t) { n = t.replay_requests_; });
  return n;
}

uint64_t FakeEngine::next_seq() {
  uint64_t n = 0;
  Run([&](Task& t) { n = t.next_seq_; });
  return n;
}

PayloadBuilder& PayloadBuilder::Stored(std::vector<uint64_t> hashes, std::optional<uint64_t> parent,
                                       std::vector<uint32_t> tokens, uint32_t block_size,
                                       std::optional<std::string> medium,
                                       std::optional<std::string> lora_name) {
  events_.push_back(Event{Event::kStored, std::move(hashes), parent, std::move(tokens), block_size,
                          std::move(medium), std::move(lora_name)});
  return *this;
}

PayloadBuilder& PayloadBuilder::Removed(std::vector<uint64_t> hashes,
                                        std::optional<std::string> medium) {
  events_.push_back(Event{Event::kRemoved, std::move(hashes), {}, {}, 0, std::move(medium), {}});
  return *this;
}

PayloadBuilder& PayloadBuilder::Cleared() {
  events_.push_back(Event{Event::kCleared, {}, {}, {}, 0, {}, {}});
  return *this;
}

PayloadBuilder& PayloadBuilder::Unknown() {
  events_.push_back(Event{Event::kUnknown, {}, {}, {}, 0, {}, {}});
  return *this;
}

namespace {

template <typename T>
void PackOptional(msgpack::packer<msgpack::sbuffer>& pk, const std::optional<T>& value) {
  if (value.has_value()) {
    pk.pack(*value);
  } else {
    pk.pack_nil();
  }
}

}  // namespace

std::string PayloadBuilder::Build(double ts, std::optional<int64_t> dp_rank) const {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(&buf);
  pk.pack_array(3);
  pk.pack_double(ts);
  pk.pack_array(static_cast<uint32_t>(events_.size()));
  for (const Event& e : events_) {
    const bool map = form_ == EventForm::kMap;
    switch (e.kind) {
      case Event::kStored:
        if (map) {
          pk.pack_map(8);
          pk.pack("type"), pk.pack("BlockStored");
          pk.pack("block_hashes"), pk.pack(e.hashes);
          pk.pack("parent_block_hash"), PackOptional(pk, e.parent);
          pk.pack("token_ids"), pk.pack(e.tokens);
          pk.pack("block_size"), pk.pack(e.block_size);
          pk.pack("lora_id"), pk.pack_nil();
          pk.pack("medium"), PackOptional(pk, e.medium);
          pk.pack("lora_name"), PackOptional(pk, e.lora_name);
        } else {
          pk.pack_array(8);
          pk.pack("BlockStored");
          pk.pack(e.hashes);
          PackOptional(pk, e.parent);
          pk.pack(e.tokens);
          pk.pack(e.block_size);
          pk.pack_nil();  // lora_id
          PackOptional(pk, e.medium);
          PackOptional(pk, e.lora_name);
        }
        break;
      case Event::kRemoved:
        if (map) {
          pk.pack_map(3);
          pk.pack("type"), pk.pack("BlockRemoved");
          pk.pack("block_hashes"), pk.pack(e.hashes);
          pk.pack("medium"), PackOptional(pk, e.medium);
        } else {
          pk.pack_array(3);
          pk.pack("BlockRemoved");
          pk.pack(e.hashes);
          PackOptional(pk, e.medium);
        }
        break;
      case Event::kCleared:
        if (map) {
          pk.pack_map(1);
          pk.pack("type"), pk.pack("AllBlocksCleared");
        } else {
          pk.pack_array(1);
          pk.pack("AllBlocksCleared");
        }
        break;
      case Event::kUnknown:
        pk.pack_array(2);
        pk.pack("SomethingNew");
        pk.pack(42);
        break;
    }
  }
  PackOptional(pk, dp_rank);
  return std::string(buf.data(), buf.size());
}

std::vector<uint32_t> PromptTokens(uint32_t blocks, uint32_t block_size) {
  std::vector<uint32_t> tokens(blocks * block_size);
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = 1000 + i;
  return tokens;
}

std::string ChainBlockPayload(uint32_t k, uint32_t block_size, double ts) {
  std::vector<uint32_t> all = PromptTokens(k + 1, block_size);
  std::vector<uint32_t> tokens(all.begin() + k * block_size, all.end());
  std::optional<uint64_t> parent;
  if (k > 0) parent = kChainHashBase + k - 1;
  return PayloadBuilder().Stored({kChainHashBase + k}, parent, tokens, block_size).Build(ts);
}

}  // namespace kvindex::testing
