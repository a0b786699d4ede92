#include "tools/bench/lag_probe.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/events/event_batch.h"
#include "grpcpp/client_context.h"
#include "spdlog/spdlog.h"
#include "tools/sim/payload_encoder.h"
#include "tools/sim/rng.h"

namespace kvindex::bench {
namespace {

// Tokens of probes are drawn above any workload's vocabulary.
constexpr uint32_t kProbeTokenBase = 1u << 24;

}  // namespace

double MeanBlocksPerRequest(uint32_t turn_tokens, uint32_t block_size) {
  const uint64_t mean = std::max<uint32_t>(turn_tokens, 1);
  const uint64_t lo = (mean + 1) / 2, hi = mean + mean / 2;
  double sum = 0;
  for (uint64_t t = lo; t <= hi; ++t) sum += static_cast<double>(t / std::max<uint32_t>(block_size, 1));
  return sum / static_cast<double>(hi - lo + 1);
}

absl::StatusOr<std::unique_ptr<LagProbe>> LagProbe::Create(LagProbeOptions options,
                                                           std::shared_ptr<grpc::Channel> match_channel) {
  auto context = std::make_unique<zmq::context_t>(1);
  sim::PublisherOptions p;
  p.host = "127.0.0.1";
  absl::StatusOr<std::unique_ptr<sim::Publisher>> publisher = sim::Publisher::Create(*context, p);
  if (!publisher.ok()) return publisher.status();
  return std::unique_ptr<LagProbe>(
      new LagProbe(std::move(options), std::move(context), *std::move(publisher), std::move(match_channel)));
}

LagProbe::LagProbe(LagProbeOptions options, std::unique_ptr<zmq::context_t> context,
                   std::unique_ptr<sim::Publisher> publisher, std::shared_ptr<grpc::Channel> match_channel)
    : options_(std::move(options)),
      context_(std::move(context)),
      publisher_(std::move(publisher)),
      stub_(v1::KvIndex::NewStub(std::move(match_channel))),
      workload_(options_.workload),
      cache_(options_.cache) {}

LagProbe::~LagProbe() {
  Stop();
  publisher_.reset();  // sockets before their context
}

v1::Pod LagProbe::pod() const {
  v1::Pod pod;
  pod.set_namespace_(options_.ns);
  pod.set_name(options_.name);
  pod.set_ip("127.0.0.1");
  pod.set_phase("Running");
  (*pod.mutable_labels())["model.aibrix.ai/name"] = options_.model;
  (*pod.mutable_labels())["model.aibrix.ai/kv-events-enabled"] = "true";
  pod.set_model(options_.model);
  pod.set_events_port(publisher_->events_port());
  pod.set_replay_port(publisher_->replay_port().value_or(0));
  return pod;
}

void LagProbe::Start() {
  if (publisher_thread_.joinable()) return;
  publisher_thread_ = std::jthread([this](std::stop_token stop) { Publish(stop); });
  poller_thread_ = std::jthread([this](std::stop_token stop) { Poll(stop); });
}

void LagProbe::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (publisher_thread_.joinable()) {
    publisher_thread_.request_stop();
    publisher_thread_.join();
  }
  if (poller_thread_.joinable()) {
    poller_thread_.request_stop();
    poller_thread_.join();
  }
}

LagResult LagProbe::result() const {
  absl::MutexLock lock(&mu_);
  return result_;
}

void LagProbe::Publish(std::stop_token stop) {
  const absl::Time start = absl::Now();
  const double batch_interval = static_cast<double>(std::max<size_t>(options_.requests_per_batch, 1)) /
                                std::max(options_.rate, 1e-3);
  sim::Rng rng(sim::Mix64(options_.workload.seed ^ 0x9E0BE5ULL));
  const size_t probe_tokens = size_t{options_.probe_blocks} * options_.cache.block_size;
  uint64_t sent = 0, probes = 0, blocks = 0;
  std::optional<std::vector<uint32_t>> armed;  // tokens of the probe riding the next batch
  while (!stop.stop_requested()) {
    const absl::Time now = absl::Now();
    absl::Time due = start + absl::Seconds(static_cast<double>(sent) * batch_interval);
    if (now - due > absl::Seconds(1)) {
      // Far behind (the machine stalled us): do not burst to catch up.
      sent = static_cast<uint64_t>(absl::ToDoubleSeconds(now - start) / batch_interval);
      due = now;
    }
    if (!armed.has_value() && probing_.load() && poller_idle_.load() && now >= due - options_.probe_lead) {
      // Arm: the poller starts polling now; the probe rides the next batch.
      armed.emplace();
      for (size_t i = 0; i < probe_tokens; ++i) {
        armed->push_back(kProbeTokenBase + static_cast<uint32_t>(rng.Below(1u << 24)));
      }
      probe_ts_ns_.store(0);
      poller_idle_.store(false);
      absl::MutexLock lock(&mu_);
      pending_ = *armed;
    }
    if (now >= due) {
      EventBatch batch;
      batch.dp_rank = 0;
      for (size_t r = 0; r < std::max<size_t>(options_.requests_per_batch, 1); ++r) {
        cache_.Serve(workload_.Next(), &batch.events);
      }
      if (armed.has_value()) cache_.Serve(*armed, &batch.events);
      for (const Event& e : batch.events) {
        if (const auto* s = std::get_if<BlockStored>(&e)) blocks += s->block_hashes.size();
      }
      const absl::Time ts = absl::Now();
      batch.ts = absl::ToDoubleSeconds(ts - absl::UnixEpoch());
      if (armed.has_value()) {
        probe_ts_ns_.store(absl::ToUnixNanos(ts));
        ++probes;
        armed.reset();
      }
      absl::Status status =
          publisher_->Publish(sim::EncodePayload(batch, sim::PayloadLayout::kMap, sim::HashEncoding::kInt));
      if (!status.ok()) spdlog::warn("probe pod: {}", status.ToString());
      ++sent;
      continue;
    }
    if (absl::Status s = publisher_->ServeReplay(); !s.ok()) spdlog::warn("probe pod replay: {}", s.ToString());
    const absl::Time wake =
        armed.has_value() || !probing_.load() || !poller_idle_.load() ? due : due - options_.probe_lead;
    const absl::Duration wait = wake - absl::Now();
    if (wait >= absl::Milliseconds(1)) {
      zmq::pollitem_t item = publisher_->ReplayPollItem();
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(std::min<int64_t>(absl::ToInt64Milliseconds(wait), 10)));
      } catch (const zmq::error_t& e) {
        spdlog::warn("probe pod poll: {}", e.what());
      }
    } else if (wait > absl::ZeroDuration()) {
      absl::SleepFor(wait);
    }
  }
  absl::MutexLock lock(&mu_);
  result_.probes = probes;
  result_.batches = sent;
  result_.blocks_stored = blocks;
}

void LagProbe::Poll(std::stop_token stop) {
  const std::string auth = options_.token.empty() ? "" : absl::StrCat("Bearer ", options_.token);
  std::vector<int64_t> rtt;
  rtt.reserve(1 << 16);
  while (!stop.stop_requested()) {
    std::vector<uint32_t> tokens;
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return pending_.has_value() || stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
      if (stopping_) return;
      if (!pending_.has_value()) continue;
      tokens = std::move(*pending_);
      pending_.reset();
    }
    v1::MatchRequest request;
    request.set_model(options_.model);
    request.mutable_token_ids()->Assign(tokens.begin(), tokens.end());
    request.add_pods(pod_key());
    const absl::Time armed = absl::Now();
    std::optional<absl::Time> last_miss_send;
    std::optional<int64_t> upper, lower;
    uint64_t polls = 0, errors = 0;
    bool timed_out = false;
    rtt.clear();
    absl::Time next_send = absl::InfinitePast();
    while (!stop.stop_requested()) {
      if (const absl::Duration wait = next_send - absl::Now(); wait > absl::ZeroDuration()) absl::SleepFor(wait);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      if (!auth.empty()) context.AddMetadata("authorization", auth);
      v1::MatchResponse response;
      const absl::Time sent = absl::Now();
      next_send = sent + options_.poll_interval;
      const grpc::Status status = stub_->Match(&context, request, &response);
      const absl::Time received = absl::Now();
      ++polls;
      bool visible = false;
      if (!status.ok()) {
        ++errors;
      } else {
        for (const v1::PodMatch& m : response.pods()) {
          visible = visible || (m.pod() == pod_key() && m.matched_blocks() >= options_.probe_blocks);
        }
      }
      const int64_t ts_ns = probe_ts_ns_.load();
      if (ts_ns == 0) {
        // Not published yet (the batch goes out probe_lead after arming).
        if (received - armed > options_.visible_timeout) {
          timed_out = true;
          break;
        }
        continue;
      }
      const absl::Time ts = absl::FromUnixNanos(ts_ns);
      if (sent >= ts) rtt.push_back(absl::ToInt64Nanoseconds(received - sent));
      if (visible) {
        upper = absl::ToInt64Nanoseconds(received - ts);
        lower = last_miss_send.has_value() ? absl::ToInt64Nanoseconds(*last_miss_send - ts) : 0;
        break;
      }
      if (sent >= ts) last_miss_send = sent;
      if (received - ts > options_.visible_timeout) {
        timed_out = true;
        break;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      result_.polls += polls;
      result_.poll_errors += errors;
      result_.poll_rtt_ns.insert(result_.poll_rtt_ns.end(), rtt.begin(), rtt.end());
      if (upper.has_value()) {
        result_.lag_upper_ns.push_back(*upper);
        result_.lag_lower_ns.push_back(*lower);
      } else if (timed_out) {
        ++result_.lost;
      }
    }
    poller_idle_.store(true);
  }
}

}  // namespace kvindex::bench
