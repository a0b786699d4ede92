#include "core/ingest/internal/subscriber.h"

#include <zmq.h>

#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kvindex {
namespace {

// Messages read per socket per poll turn, so one busy engine cannot starve the others.
constexpr int kMaxMessagesPerTurn = 256;
// Frames kept from one message; longer messages are malformed anyway.
constexpr size_t kMaxFrames = 5;

// Reads one whole multipart message without waiting. Returns false when none is
// queued. `frames` gets at most kMaxFrames frames; `total` counts them all.
bool RecvMessage(zmq::socket_t& socket, std::vector<zmq::message_t>& frames, size_t& total) {
  frames.clear();
  total = 0;
  zmq::message_t frame;
  if (!socket.recv(frame, zmq::recv_flags::dontwait)) return false;
  while (true) {
    ++total;
    const bool more = frame.more();
    if (frames.size() < kMaxFrames) frames.push_back(std::move(frame));
    if (!more) return true;
    frame = zmq::message_t();
    // The remaining parts of a message are always there once the first is.
    if (!socket.recv(frame, zmq::recv_flags::none)) return true;
  }
}

std::string_view View(const zmq::message_t& frame) {
  return std::string_view(static_cast<const char*>(frame.data()), frame.size());
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subscriber>> Subscriber::Create(
    zmq::context_t& context, SubscriberConfig config, PrefixIndex* index,
    std::shared_ptr<WorkerStatusCell> status, const ZmqTuning& tuning) {
  std::unique_ptr<Subscriber> subscriber(
      new Subscriber(context, std::move(config), index, std::move(status), tuning));
  if (absl::Status s = subscriber->Open(); !s.ok()) {
    WorkerStatus failed = subscriber->feed_.status();
    failed.state = WorkerState::kFailed;
    subscriber->status_->Set(failed);
    return s;
  }
  const absl::Time now = absl::Now();
  subscriber->feed_.Start(now);
  subscriber->CarryOutReplayOps(now);
  subscriber->Publish();
  return subscriber;
}

Subscriber::Subscriber(zmq::context_t& context, SubscriberConfig config, PrefixIndex* index,
                       std::shared_ptr<WorkerStatusCell> status, const ZmqTuning& tuning)
    : context_(context),
      config_(std::move(config)),
      status_(std::move(status)),
      tuning_(tuning),
      writer_(index, config_.worker, config_.context),
      feed_(&writer_,
            FeedOptions{.has_replay = !config_.replay_endpoint.empty(),
                        .replay_timeout = config_.replay_timeout,
                        .max_backlog = config_.max_backlog},
            config_.worker.dp_rank, config_.metrics) {
  published_.dp_rank = config_.worker.dp_rank;
}

Subscriber::~Subscriber() {
  try {
    if (sub_.has_value() && monitor_.has_value()) zmq_socket_monitor(sub_->handle(), nullptr, 0);
    monitor_.reset();
    sub_.reset();
    replay_.reset();
  } catch (const zmq::error_t& e) {
    spdlog::error("worker {}: closing sockets: {}", WorkerKeyString(config_.worker), e.what());
  }
}

absl::Status Subscriber::Open() {
  try {
    if (!config_.events_endpoint.empty()) {
      sub_.emplace(context_, zmq::socket_type::sub);
      TuneSocket(*sub_, tuning_);
      sub_->set(zmq::sockopt::subscribe, config_.topic);
      // Monitor connects/disconnects so ListPods can tell "connecting" from "live".
      const std::string monitor_endpoint =
          absl::StrCat("inproc://kvindex-monitor-", reinterpret_cast<uintptr_t>(this), "-",
                       absl::ToUnixNanos(absl::Now()));
      if (zmq_socket_monitor(sub_->handle(), monitor_endpoint.c_str(),
                             ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) == 0) {
        monitor_.emplace(context_, zmq::socket_type::pair);
        monitor_->set(zmq::sockopt::linger, 0);
        monitor_->connect(monitor_endpoint);
      }
      sub_->connect(config_.events_endpoint);
    }
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("worker ", WorkerKeyString(config_.worker),
                                               ": cannot subscribe to ", config_.events_endpoint,
                                               ": ", e.what()));
  }
  return absl::OkStatus();
}

void Subscriber::OpenReplay() {
  replay_.emplace(context_, zmq::socket_type::dealer);
  TuneSocket(*replay_, tuning_);
  replay_->connect(config_.replay_endpoint);
}

void Subscriber::CollectPollItems(std::vector<zmq::pollitem_t>& items) {
  for (std::optional<zmq::socket_t>* socket : {&sub_, &replay_, &monitor_}) {
    if (socket->has_value()) items.push_back({(*socket)->handle(), 0, ZMQ_POLLIN, 0});
  }
}

void Subscriber::OnPoll(absl::Span<const zmq::pollitem_t> items, absl::Time now) {
  // The replay socket may have been replaced since the items were collected
  // (CarryOutReplayOps): use the items only as a hint and always read from
  // the current sockets.
  bool any = false;
  for (const zmq::pollitem_t& item : items) any = any || (item.revents & ZMQ_POLLIN) != 0;
  try {
    if (any) {
      if (monitor_.has_value()) ReadMonitor();
      if (sub_.has_value()) ReadLive(now);
      if (replay_.has_value()) ReadReplay(now);
    }
    feed_.OnTimer(now);
    CarryOutReplayOps(now);
  } catch (const zmq::error_t& e) {
    spdlog::error("worker {}: socket error: {}", WorkerKeyString(config_.worker), e.what());
  }
  Publish();
}

void Subscriber::OnLiveMessage(uint64_t seq, std::string_view payload, absl::Time now) {
  if (seq > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    feed_.OnBadFrame();
  } else {
    feed_.OnLive(seq, payload, now);
  }
  CarryOutReplayOps(now);  // throws nothing: a request it cannot send fails its replay
  Publish();
}

void Subscriber::ReadLive(absl::Time now) {
  std::vector<zmq::message_t> frames;
  size_t total = 0;
  for (int i = 0; i < kMaxMessagesPerTurn && RecvMessage(*sub_, frames, total); ++i) {
    std::optional<uint64_t> seq = total == 3 ? ParseSeqFrame(frames[1]) : std::nullopt;
    if (!seq.has_value() || *seq > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      feed_.OnBadFrame();
      continue;
    }
    feed_.OnLive(*seq, View(frames[2]), now);
  }
}

void Subscriber::ReadReplay(absl::Time now) {
  std::vector<zmq::message_t> frames;
  size_t total = 0;
  for (int i = 0; i < kMaxMessagesPerTurn && RecvMessage(*replay_, frames, total); ++i) {
    // ["", seq, payload] or ["", topic, seq, payload].
    if ((total != 3 && total != 4) || frames[0].size() != 0) {
      feed_.OnBadFrame();
      continue;
    }
    const zmq::message_t& seq_frame = frames[total - 2];
    std::optional<uint64_t> seq = ParseSeqFrame(seq_frame);
    if (!seq.has_value()) {
      feed_.OnBadFrame();
    } else if (*seq == kReplayEndSeq) {
      feed_.OnReplayEnd(now);
    } else if (*seq > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      feed_.OnBadFrame();
    } else {
      feed_.OnReplayBatch(*seq, View(frames[total - 1]));
    }
  }
}

void Subscriber::ReadMonitor() {
  std::vector<zmq::message_t> frames;
  size_t total = 0;
  for (int i = 0; i < kMaxMessagesPerTurn && RecvMessage(*monitor_, frames, total); ++i) {
    if (frames.empty() || frames[0].size() < sizeof(uint16_t)) continue;
    uint16_t event;
    std::memcpy(&event, frames[0].data(), sizeof(event));
    if (event == ZMQ_EVENT_CONNECTED) feed_.OnConnected(true);
    if (event == ZMQ_EVENT_DISCONNECTED) feed_.OnConnected(false);
  }
}

void Subscriber::Publish() {
  const WorkerStatus& now = feed_.status();
  if (now == published_) return;
  if (now.state != published_.state) {
    spdlog::info("worker {}: {} -> {} (last seq {})", WorkerKeyString(config_.worker),
                 WorkerStateName(published_.state), WorkerStateName(now.state), now.last_seq);
  }
  if (now.restarts != published_.restarts) {
    spdlog::warn("worker {}: engine restarted (seq went backwards); blocks cleared",
                 WorkerKeyString(config_.worker));
  }
  if (now.uncovered_gaps != published_.uncovered_gaps) {
    spdlog::warn("worker {}: events lost that no replay could cover; blocks cleared",
                 WorkerKeyString(config_.worker));
  }
  if (now.history_complete != published_.history_complete) {
    if (now.history_complete) {
      spdlog::info("worker {}: history complete again (last seq {})", WorkerKeyString(config_.worker), now.last_seq);
    } else {
      spdlog::warn("worker {}: history incomplete: the engine published batches kvindex never saw (first seen or "
                   "resumed at seq {}); blocks it stored before may be missing until it restarts or clears",
                   WorkerKeyString(config_.worker), now.last_seq);
    }
  }
  status_->Set(now);
  published_ = now;
}

void Subscriber::CarryOutReplayOps(absl::Time now) {
  // A request that cannot be sent fails its replay, which may start the next
  // one (from the batches held meanwhile): until the feed asks nothing more.
  for (std::vector<ReplayOp> ops = feed_.TakeReplayOps(); !ops.empty(); ops = feed_.TakeReplayOps()) {
    for (const ReplayOp& op : ops) {
      if (op.kind == ReplayOp::Kind::kReset) {
        // Late replies to the abandoned request must not be taken for replies
        // to the next one: that one gets a fresh socket.
        replay_.reset();
      } else if (!SendReplayRequest(op.from_seq)) {
        feed_.OnReplayRequestFailed(now);
      }
    }
  }
  // The replay socket exists only while a replay is out: two file descriptors
  // fewer per idle worker.
  if (!feed_.replaying()) replay_.reset();
}

bool Subscriber::SendReplayRequest(uint64_t from_seq) {
  if (config_.replay_endpoint.empty()) return false;
  try {
    if (!replay_.has_value()) OpenReplay();
    const std::string seq = SeqFrame(from_seq);
    if (!replay_->send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return false;
    }
    replay_->send(zmq::buffer(seq), zmq::send_flags::dontwait);
    return true;
  } catch (const zmq::error_t& e) {
    spdlog::error("worker {}: replay request failed: {}", WorkerKeyString(config_.worker),
                  e.what());
    return false;
  }
}

SubscriptionFactory& ZmqSubscriptions() {
  class Zmq final : public SubscriptionFactory {
   public:
    absl::StatusOr<std::unique_ptr<WorkerSubscription>> Create(zmq::context_t& context, SubscriberConfig config,
                                                               PrefixIndex* index,
                                                               std::shared_ptr<WorkerStatusCell> status) override {
      absl::StatusOr<std::unique_ptr<Subscriber>> subscriber =
          Subscriber::Create(context, std::move(config), index, std::move(status));
      if (!subscriber.ok()) return subscriber.status();
      return std::unique_ptr<WorkerSubscription>(*std::move(subscriber));
    }
  };
  static Zmq* const factory = new Zmq();
  return *factory;
}

}  // namespace kvindex
