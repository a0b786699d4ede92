#pragma once

// IoThread: one thread that owns a set of ZeroMQ sockets (grouped in IoTasks)
// and serves them with zmq::poll. Other threads hand it work with Post(); it
// never waits for them, so adding or removing a task never blocks the
// ingestion of the others.
//
// Thread safety: Post() and Stop() may be called from any thread. Everything
// else (AddTask, RemoveTask, FindTask, the IoTask calls) runs on the I/O thread.

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "zmq.hpp"

namespace kvindex {

// A group of sockets served by one IoThread. Created, called and destroyed on
// that thread only; its destructor closes its sockets.
class IoTask {
 public:
  virtual ~IoTask() = default;

  // Appends one ZMQ_POLLIN item per socket to poll this turn.
  virtual void CollectPollItems(std::vector<zmq::pollitem_t>& items) = 0;

  // Called every turn with exactly the items this task collected (revents
  // filled in), and `now`. Must not block; should read a bounded number of
  // messages per socket so other tasks get their turn.
  virtual void OnPoll(absl::Span<const zmq::pollitem_t> items, absl::Time now) = 0;

  // The time by which OnPoll must run even without input (a timer);
  // absl::InfiniteFuture() when none.
  virtual absl::Time Deadline() const { return absl::InfiniteFuture(); }
};

class IoThread {
 public:
  using Command = absl::AnyInvocable<void(IoThread&)>;

  // Starts the thread. `context` must outlive this object.
  IoThread(zmq::context_t& context, std::string name);
  // Stop()s.
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  // Queues `command` to run on the I/O thread, in posting order. Returns false
  // (and drops it) once Stop() has begun.
  bool Post(Command command) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs the commands already posted, destroys every task (closing its
  // sockets) on the I/O thread, and joins it. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // I/O thread only. Takes ownership; `id` must be unused.
  void AddTask(uint64_t id, std::unique_ptr<IoTask> task);
  // I/O thread only. Destroys the task; no-op when unknown.
  void RemoveTask(uint64_t id);
  // I/O thread only. nullptr when unknown.
  IoTask* FindTask(uint64_t id) const;

  zmq::context_t& context() { return context_; }
  const std::string& name() const { return name_; }

 private:
  void Run();
  // Runs the queued commands; returns false when stopping.
  bool RunCommands() ABSL_LOCKS_EXCLUDED(mu_);
  void Wake();

  zmq::context_t& context_;
  const std::string name_;
  int wake_fd_ = -1;  // eventfd; readable when commands are queued

  absl::Mutex mu_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex join_mu_;  // serialises Stop()

  // I/O thread only. Ordered so tasks are destroyed newest first.
  std::map<uint64_t, std::unique_ptr<IoTask>> tasks_;

  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace kvindex
