#include "tools/sim/sim_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace kvindex::sim {
namespace {

// Longest wait in poll, so that Stop() is noticed quickly.
constexpr absl::Duration kMaxWait = absl::Milliseconds(50);
// Most requests served for one engine before the thread serves replay requests again.
constexpr uint64_t kMaxRequestsPerTurn = 4096;
// At full speed, batches served per engine per turn.
constexpr uint64_t kBatchesPerTurn = 8;
// Errors logged before going quiet.
constexpr uint64_t kMaxLoggedErrors = 20;

struct EngineState {
  size_t index = 0;
  absl::Time start;  // of its request schedule
  uint64_t served = 0;
  bool done = false;
  absl::Time next_restart = absl::InfiniteFuture();
};

}  // namespace

SimRunner::SimRunner(std::vector<SimEngine*> engines, RunnerOptions options)
    : engines_(std::move(engines)), options_(options) {}

SimRunner::~SimRunner() { Stop(); }

void SimRunner::Start() {
  const size_t threads = std::clamp<size_t>(options_.threads, 1, std::max<size_t>(engines_.size(), 1));
  std::vector<std::vector<size_t>> shares(threads);
  for (size_t i = 0; i < engines_.size(); ++i) shares[i % threads].push_back(i);
  for (auto& share : shares) {
    threads_.emplace_back([this, share = std::move(share)](std::stop_token stop) { Run(stop, share); });
  }
}

void SimRunner::Stop() {
  for (auto& t : threads_) t.request_stop();
  threads_.clear();  // joins
}

absl::Status SimRunner::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

void SimRunner::Report(size_t engine, const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (status_.ok()) status_ = status;
  if (++errors_ <= kMaxLoggedErrors) {
    spdlog::warn("{}#{}: {}", engines_[engine]->pod_key(), engines_[engine]->options().dp_rank, status.ToString());
  }
}

void SimRunner::Run(std::stop_token stop, std::vector<size_t> mine) {
  const absl::Time start = absl::Now();
  std::vector<EngineState> states;
  for (size_t index : mine) {
    EngineState s;
    s.index = index;
    s.start = start;
    if (options_.stagger && options_.rate > 0) {
      s.start += absl::Seconds(static_cast<double>(index) / static_cast<double>(engines_.size()) / options_.rate);
    }
    if (options_.restart_every > absl::ZeroDuration()) {
      // Staggered, so that engines do not all restart at once.
      s.next_restart = start + options_.restart_every +
                       options_.restart_every * (static_cast<double>(index) / static_cast<double>(engines_.size()));
    }
    states.push_back(s);
  }
  std::vector<zmq::pollitem_t> items;
  std::vector<size_t> item_engine;

  while (!stop.stop_requested()) {
    const absl::Time now = absl::Now();
    absl::Time next_due = now + kMaxWait;
    bool busy = false;
    for (EngineState& s : states) {
      SimEngine& engine = *engines_[s.index];
      if (!s.done && ((options_.duration > absl::ZeroDuration() && now - start >= options_.duration) ||
                      (options_.max_requests > 0 && s.served >= options_.max_requests))) {
        s.done = true;
        ++engines_done_;
      }
      if (s.done) continue;
      if (now >= s.next_restart) {
        s.next_restart += options_.restart_every;
        spdlog::info("{}#{}: restarting", engine.pod_key(), engine.options().dp_rank);
        if (absl::Status status = engine.Restart(); !status.ok()) Report(s.index, status);
      }
      uint64_t due;
      if (options_.rate <= 0) {
        due = s.served + kBatchesPerTurn * std::max<size_t>(engine.options().requests_per_batch, 1);
        busy = true;
      } else {
        // The first request goes out at the engine's start, then one every 1/rate seconds.
        due = now < s.start ? 0
                            : static_cast<uint64_t>(std::floor(absl::ToDoubleSeconds(now - s.start) * options_.rate)) + 1;
      }
      if (options_.max_requests > 0) due = std::min(due, options_.max_requests);
      if (due > s.served) {
        const uint64_t n = std::min(due - s.served, kMaxRequestsPerTurn);
        if (absl::Status status = engine.Step(n); !status.ok()) Report(s.index, status);
        s.served += n;
        if (s.served < due) busy = true;
      }
      if (options_.rate > 0) {
        next_due = std::min(next_due, s.start + absl::Seconds(static_cast<double>(s.served) / options_.rate));
      }
      next_due = std::min(next_due, s.next_restart);
    }

    items.clear();
    item_engine.clear();
    for (const EngineState& s : states) {
      zmq::pollitem_t item = engines_[s.index]->ReplayPollItem();
      if (item.socket == nullptr) continue;
      items.push_back(item);
      item_engine.push_back(s.index);
    }
    const absl::Duration wait = busy ? absl::ZeroDuration() : std::clamp(next_due - absl::Now(), absl::ZeroDuration(), kMaxWait);
    try {
      // zmq::poll counts whole milliseconds: under one it would return at once
      // and this loop would spin (a core's worth at ~1k batches/s) until due.
      if (items.empty() || (wait > absl::ZeroDuration() && wait < absl::Milliseconds(1))) {
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        continue;
      }
      zmq::poll(items, std::chrono::milliseconds(absl::ToInt64Milliseconds(wait)));
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      Report(mine.front(), absl::UnavailableError(absl::StrCat("poll: ", e.what())));
      continue;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      if (absl::Status status = engines_[item_engine[i]]->ServeReplay(); !status.ok()) Report(item_engine[i], status);
    }
  }
}

}  // namespace kvindex::sim
