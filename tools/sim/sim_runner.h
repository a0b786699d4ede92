#pragma once

// SimRunner: drives simulated engines on a few threads. Each thread owns a
// share of the engines (round robin): it serves their requests at the
// configured rate (each engine's schedule offset by a fraction of the interval
// unless RunnerOptions::stagger is off), restarts them on schedule, and answers their replay
// requests, waiting in zmq::poll between requests. After an engine's traffic
// ends (duration or request count), its replay socket is still served until
// Stop().
//
// Thread safety: Start/Stop from one thread; TrafficDone() and status() from any.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tools/sim/sim_engine.h"

namespace kvindex::sim {

struct RunnerOptions {
  double rate = 10;                 // requests per second per engine; <= 0: as fast as possible
  // Engine i's schedule starts i/N of a request interval late, as independent
  // pods' would; false: every engine's requests fall due at the same instants.
  bool stagger = true;
  uint64_t max_requests = 0;        // requests per engine; 0: no limit
  absl::Duration duration = absl::ZeroDuration();       // traffic time; zero: until Stop()
  absl::Duration restart_every = absl::ZeroDuration();  // per engine, staggered; zero: never
  size_t threads = 1;
};

class SimRunner {
 public:
  // The engines must outlive the runner and must not be used by anyone else
  // (except through their thread-safe calls) until Stop() returns.
  SimRunner(std::vector<SimEngine*> engines, RunnerOptions options);
  ~SimRunner();  // Stop()
  SimRunner(const SimRunner&) = delete;
  SimRunner& operator=(const SimRunner&) = delete;

  void Start();

  // Stops traffic and replay service and joins the threads. Idempotent.
  void Stop();

  // True once every engine has finished its traffic.
  bool TrafficDone() const { return engines_done_.load() == engines_.size(); }

  // The first error an engine reported (OK when none); later ones are logged.
  [[nodiscard]] absl::Status status() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run(std::stop_token stop, std::vector<size_t> mine);
  void Report(size_t engine, const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<SimEngine*> engines_;
  const RunnerOptions options_;
  std::atomic<size_t> engines_done_{0};
  std::vector<std::jthread> threads_;

  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  uint64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvindex::sim
