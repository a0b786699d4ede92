#include "core/ingest/internal/subscriber.h"

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
                        .max_backlog = config_.max_backlog,
                        .resume = config_.resume,
                        .catch_up_after = config_.catch_up_after},
            config_.worker.dp_rank, config_.metrics) {
  published_.dp_rank = config_.worker.dp_rank;
}

Subscriber::~Subscriber() {
  if (config_.replay_slots != nullptr) config_.replay_slots->Release(this);
  try {
    replay_.reset();
    sub_.reset();
  } catch (const zmq::error_t& e) {
    spdlog::error("worker {}: closing sockets: {}", WorkerKeyString(config_.worker), e.what());
  }
}

absl::Status Subscriber::Open() {
  if (config_.events_endpoint.empty()) return absl::OkStatus();
  try {
    sub_.emplace(context_, zmq::socket_type::sub);
    TuneSocket(*sub_, tuning_);
    sub_->set(zmq::sockopt::subscribe, config_.topic);
    sub_->connect(config_.events_endpoint);
  } catch (const zmq::error_t& e) {
    sub_.reset();
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

void Subscriber::CollectSockets(std::vector<zmq::socket_ref>& sockets) {
  if (sub_.has_value()) sockets.push_back(*sub_);
  if (replay_.has_value()) sockets.push_back(*replay_);
}

void Subscriber::OnReady(absl::Time now) {
  try {
    if (sub_.has_value()) ReadLive(now);
    if (replay_.has_value()) ReadReplay(now);
  } catch (const zmq::error_t& e) {
    spdlog::error("worker {}: socket error: {}", WorkerKeyString(config_.worker), e.what());
  }
  feed_.OnTimer(now);
  CarryOutReplayOps(now);
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
  RequestTurn();  // the replay deadline may have changed
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
  // The socket may be replaced (kReset) or closed (replay over) by the message read.
  for (int i = 0; i < kMaxMessagesPerTurn && replay_.has_value() && RecvMessage(*replay_, frames, total); ++i) {
    OnReplayMessage(frames, total, now);
    CarryOutReplayOps(now);
  }
}

void Subscriber::OnReplayMessage(const std::vector<zmq::message_t>& frames, size_t total, absl::Time now) {
  // ["", seq, payload] or ["", topic, seq, payload].
  if ((total != 3 && total != 4) || frames[0].size() != 0) {
    feed_.OnBadFrame();
  } else {
    feed_.OnConnected(true);  // the engine answered
    const zmq::message_t& seq_frame = frames[total - 2];
    std::optional<uint64_t> seq = ParseSeqFrame(seq_frame);
    if (!seq.has_value()) {
      feed_.OnBadFrame();
    } else if (*seq == kReplayEndSeq) {
      feed_.OnReplayEnd(now);
    } else if (*seq > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      feed_.OnBadFrame();
    } else {
      feed_.OnReplayBatch(*seq, View(frames[total - 1]), now);
    }
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
  if (queued_request_.has_value() && TakeReplaySlot()) {
    // A slot came free for the request waiting for one.
    if (SendReplayRequest(*std::exchange(queued_request_, std::nullopt))) {
      feed_.OnReplayRequestSent(now);
    } else {
      feed_.OnReplayRequestFailed(now);
    }
  }
  // A request that cannot be sent fails its replay, which may start the next
  // one (from the batches held meanwhile): until the feed asks nothing more.
  for (std::vector<ReplayOp> ops = feed_.TakeReplayOps(); !ops.empty(); ops = feed_.TakeReplayOps()) {
    for (const ReplayOp& op : ops) {
      if (op.kind == ReplayOp::Kind::kReset) {
        // Late replies to the abandoned request must not be taken for replies
        // to the next one: that one gets a fresh socket.
        replay_.reset();
        queued_request_.reset();
      } else if (!TakeReplaySlot()) {
        queued_request_ = op.from_seq;  // sent once a slot is free
        feed_.OnReplayRequestQueued();
      } else if (!SendReplayRequest(op.from_seq)) {
        feed_.OnReplayRequestFailed(now);
      }
    }
  }
  // The replay socket (and its slot) exists only while a replay is out: two
  // files fewer per idle worker.
  if (!feed_.replaying()) {
    replay_.reset();
    queued_request_.reset();
    if (config_.replay_slots != nullptr) config_.replay_slots->Release(this);
  }
}

bool Subscriber::TakeReplaySlot() {
  if (config_.replay_slots == nullptr || config_.replay_endpoint.empty()) return true;
  // Asked again while waiting: a worker whose engine has been heard from since moves ahead.
  return config_.replay_slots->Acquire(this, feed_.engine_heard(), [this] { RequestTurn(); });
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
    spdlog::error("worker {}: replay request failed: {}", WorkerKeyString(config_.worker), e.what());
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
