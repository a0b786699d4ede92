// libFuzzer target: arbitrary sequences of ZeroMQ messages and replay replies
// through the frame parsing and sequencing of a subscription:
//  - live messages of any shape go through the checks a subscriber makes
//    (ParseSeqFrame on the seq frame, ParseBindTopic on the topic frame in bind
//    mode) into a socket-free bind-mode Subscriber (OnLiveMessage: WorkerFeed,
//    PrefixIndex, status publishing);
//  - the same stream, plus replay replies, end markers, timeouts, connects and
//    failing replay sends, drives a WorkerFeed whose sink records what it does.
// Payloads are either fuzzer bytes or a well-formed batch whose ts is its seq.
// Invariants: between two clears, batches are applied in strictly increasing
// seq order and never twice; replay requests never ask for a seq beyond the one
// that revealed the gap; counters never decrease.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "core/index/prefix_index.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/subscriber.h"
#include "core/ingest/internal/worker_feed.h"
#include "core/ingest/worker_status.h"
#include "msgpack.hpp"
#include "spdlog/spdlog.h"
#include "zmq.hpp"

namespace {

using namespace kvindex;

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

// [ts = seq, [["BlockStored", [hash], parent, tokens, 4, nil, "GPU"]], 0]:
// block `seq` of one chain.
std::string GoodPayload(uint64_t seq) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> pk(buffer);
  pk.pack_array(3);
  pk.pack_double(static_cast<double>(seq));
  pk.pack_array(1);
  pk.pack_array(7);
  pk.pack(std::string("BlockStored"));
  pk.pack_array(1);
  pk.pack_uint64(1000 + seq);
  if (seq == 0) {
    pk.pack_nil();
  } else {
    pk.pack_uint64(1000 + seq - 1);
  }
  pk.pack_array(4);
  for (uint32_t t = 0; t < 4; ++t) pk.pack_uint32(static_cast<uint32_t>(seq * 4 + t));
  pk.pack_uint32(4);
  pk.pack_nil();
  pk.pack(std::string("GPU"));
  pk.pack_int64(0);
  return std::string(buffer.data(), buffer.size());
}

class CheckingSink : public BlockWriter {
 public:
  explicit CheckingSink(PrefixIndex* index) : index_(index) {}
  ApplyResult Apply(const EventBatch& batch) override {
    const ApplyResult applied = index_->Apply(worker_, context_, batch);
    // Well-formed payloads carry their seq as ts; fuzzer bytes that decode may
    // carry anything, so only ours are checked.
    if (batch.dp_rank == 0 && batch.events.size() == 1 && batch.ts >= 0 && batch.ts < 1e15 &&
        static_cast<double>(static_cast<int64_t>(batch.ts)) == batch.ts) {
      const auto seq = static_cast<int64_t>(batch.ts);
      if (std::getenv("FRAME_FUZZER_TRACE") != nullptr) std::fprintf(stderr, "  apply %lld\n", (long long)seq);
      if (ours_) Check(seq > last_applied_, "applied in increasing seq order between clears");
      last_applied_ = seq;
    }
    return applied;
  }
  void Clear() override {
    if (std::getenv("FRAME_FUZZER_TRACE") != nullptr) std::fprintf(stderr, "  clear\n");
    index_->ClearWorker(worker_);
    last_applied_ = -1;
  }
  // Carries out the feed's replay ops as a Subscriber does, recording requests.
  void CarryOut(WorkerFeed& feed, absl::Time now) {
    for (std::vector<ReplayOp> ops = feed.TakeReplayOps(); !ops.empty(); ops = feed.TakeReplayOps()) {
      for (const ReplayOp& op : ops) {
        if (op.kind != ReplayOp::Kind::kRequest) continue;
        requests.push_back(op.from_seq);
        if (!send_ok) feed.OnReplayRequestFailed(now);
      }
    }
  }

  std::vector<uint64_t> requests;
  bool send_ok = true;
  bool ours_ = true;  // false once fuzzer bytes could have decoded into a look-alike

 private:
  PrefixIndex* const index_;
  const WorkerKey worker_{"fuzz/feed", 0};
  const WorkerContext context_{.model = "m", .default_lora = ""};
  int64_t last_applied_ = -1;
};

bool Monotone(const WorkerStatus& before, const WorkerStatus& after) {
  bool monotone = true;
#define KVINDEX_CHECK_MONOTONE(name, help) monotone = monotone && after.name >= before.name;
  KVINDEX_WORKER_COUNTERS(KVINDEX_CHECK_MONOTONE)
#undef KVINDEX_CHECK_MONOTONE
  return monotone;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);  // state changes are logged at info
    return true;
  }();
  (void)quiet;
  static zmq::context_t* context = new zmq::context_t(0);  // no I/O threads: no sockets are made

  PrefixIndex index(IndexOptions{.max_blocks_per_worker = 256, .max_entries = 1024, .shards = 4});
  auto cell = std::make_shared<WorkerStatusCell>(0);
  SubscriberConfig config;
  config.worker = WorkerKey{"fuzz/sub", 0};
  config.context = WorkerContext{.model = "m", .default_lora = ""};
  config.max_backlog = 64;
  absl::StatusOr<std::unique_ptr<Subscriber>> subscriber = Subscriber::Create(*context, config, &index, cell);
  Check(subscriber.ok(), "a bind-mode subscriber without replay needs no socket");

  CheckingSink sink(&index);
  const bool has_replay = in.ConsumeBool();
  WorkerFeed feed(&sink, FeedOptions{.has_replay = has_replay, .replay_timeout = absl::Seconds(2), .max_backlog = 16},
                  0);
  absl::Time now = absl::FromUnixSeconds(1700000000);
  feed.Start(now);
  sink.CarryOut(feed, now);

  uint64_t next_seq = 0;
  int64_t max_live_seq = -1;
  WorkerStatus before = feed.status();
  for (int op = 0; op < 512 && in.remaining_bytes() > 0; ++op) {
    const int kind = in.ConsumeIntegralInRange(0, 9);
    // A seq near the stream's position, or anything.
    uint64_t seq;
    switch (in.ConsumeIntegralInRange(0, 4)) {
      case 0: seq = next_seq++; break;
      case 1: seq = next_seq + in.ConsumeIntegralInRange<uint64_t>(1, 5); next_seq = seq + 1; break;
      case 2: seq = next_seq > 0 ? next_seq - 1 - in.ConsumeIntegralInRange<uint64_t>(0, next_seq - 1) : 0; break;
      case 3: seq = in.ConsumeIntegralInRange<uint64_t>(0, 3); break;
      default: seq = in.ConsumeIntegral<uint64_t>(); break;
    }
    // ts is a double: seqs beyond 2^53 get fuzzer bytes instead.
    const bool good = in.ConsumeBool() && seq < (uint64_t{1} << 53);
    std::string payload = good ? GoodPayload(seq) : in.ConsumeRandomLengthString(256);
    if (!good) sink.ours_ = false;
    if (std::getenv("FRAME_FUZZER_TRACE") != nullptr) {
      std::fprintf(stderr, "op %d kind %d seq %llu good %d\n", op, kind, (unsigned long long)seq, good);
    }
    if (kind <= 3) {
      // A live message: [topic, seq8, payload] or any other shape.
      std::vector<zmq::message_t> frames;
      const int shape = in.ConsumeIntegralInRange(0, 3);
      if (shape == 0) {
        const int n = in.ConsumeIntegralInRange(0, 6);
        for (int i = 0; i < n; ++i) {
          const std::string bytes = in.ConsumeRandomLengthString(16);
          frames.emplace_back(bytes.data(), bytes.size());
        }
      } else {
        const std::string topic = shape == 1 ? "kv@127.0.0.1@m" : in.ConsumeRandomLengthString(48);
        const std::string seq_frame = shape == 3 ? in.ConsumeRandomLengthString(10) : SeqFrame(seq);
        if (shape == 3) sink.ours_ = false;  // the payload's ts no longer names its seq
        frames.emplace_back(topic.data(), topic.size());
        frames.emplace_back(seq_frame.data(), seq_frame.size());
        frames.emplace_back(payload.data(), payload.size());
      }
      if (!frames.empty()) (void)ParseBindTopic(frames[0].to_string_view());
      std::optional<uint64_t> parsed = frames.size() == 3 ? ParseSeqFrame(frames[1]) : std::nullopt;
      if (!parsed.has_value() || *parsed > static_cast<uint64_t>(INT64_MAX)) {
        feed.OnBadFrame();
        continue;
      }
      if (std::getenv("FRAME_FUZZER_TRACE") != nullptr) std::fprintf(stderr, "  live seq %llu\n", (unsigned long long)*parsed);
      (*subscriber)->OnLiveMessage(*parsed, frames[2].to_string_view(), now);
      const int64_t live = static_cast<int64_t>(*parsed);
      feed.OnLive(*parsed, frames[2].to_string_view(), now);
      max_live_seq = std::max(max_live_seq, live);
    } else if (kind <= 5) {
      if (seq <= static_cast<uint64_t>(INT64_MAX)) feed.OnReplayBatch(seq, payload, now);
    } else if (kind == 6) {
      feed.OnReplayEnd(now);
    } else if (kind == 7) {
      now += absl::Milliseconds(in.ConsumeIntegralInRange(0, 3000));
      if (now >= feed.Deadline()) feed.OnTimer(now);
      (*subscriber)->OnReady(now);
    } else if (kind == 8) {
      feed.OnConnected(in.ConsumeBool());
    } else {
      sink.send_ok = in.ConsumeBool();
    }
    sink.CarryOut(feed, now);
    const WorkerStatus after = feed.status();
    if (std::getenv("FRAME_FUZZER_TRACE") != nullptr) {
      std::fprintf(stderr, "  -> last_seq %lld dups %llu restarts %llu gaps %llu bad %llu replaying %d\n",
                   (long long)after.last_seq, (unsigned long long)after.duplicates,
                   (unsigned long long)after.restarts, (unsigned long long)after.gaps,
                   (unsigned long long)after.bad_frames, feed.replaying());
    }
    Check(Monotone(before, after), "feed counters never decrease");
    Check(after.last_seq >= -1, "last_seq is a seq or -1");
    before = after;
  }
  for (uint64_t from : sink.requests) {
    Check(max_live_seq < 0 || from <= static_cast<uint64_t>(max_live_seq) + 1 || from == 0,
          "replay requests ask for nothing beyond the live stream");
  }
  const WorkerStatus published = cell->Get();
  Check(published.batches <= published.events + published.batches, "status readable");
  return 0;
}
