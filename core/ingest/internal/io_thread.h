#pragma once

// IoThread: one thread that owns a set of ZeroMQ sockets (grouped in IoTasks)
// and waits on their file descriptors (ZMQ_FD) with epoll, so that a turn
// touches only the tasks with input, a timer due, or a turn asked for: an idle
// task costs nothing per turn, however many there are. Other threads hand it
// work with Post(); it never waits for them, so adding or removing a task
// never blocks the ingestion of the others.
//
// Thread safety: Post() and Stop() may be called from any thread. Everything
// else (AddTask, RemoveTask, FindTask, the IoTask calls) runs on the I/O thread.

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "zmq.hpp"

namespace kvindex {

class IoThread;

// A group of sockets served by one IoThread. Created, called and destroyed on
// that thread only; its destructor closes its sockets.
class IoTask {
 public:
  virtual ~IoTask() = default;

  // The sockets to wait on for input. Asked after AddTask and after every
  // turn: the set may change between turns.
  virtual void CollectSockets(std::vector<zmq::socket_ref>& sockets) = 0;

  // A turn: a socket of this task may have input, its Deadline() passed, it
  // asked for one (RequestTurn), or a command found it (FindTask). Must not
  // block; reads a bounded number of messages per socket so other tasks get
  // their turn (the thread gives another turn at once while input is left).
  virtual void OnReady(absl::Time now) = 0;

  // The time by which OnReady must run even without input (a timer);
  // absl::InfiniteFuture() when none. Asked after every turn.
  virtual absl::Time Deadline() const { return absl::InfiniteFuture(); }

 protected:
  // Asks for a turn as soon as the current one ends, e.g. after state changed
  // outside OnReady (a message another task routed here). I/O thread only;
  // no-op before AddTask.
  void RequestTurn();

 private:
  friend class IoThread;
  IoThread* thread_ = nullptr;
  uint64_t id_ = 0;
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
  void Stop() ABSL_LOCKS_EXCLUDED(mu_, join_mu_);

  // I/O thread only. Takes ownership; `id` must be unused. The task gets a turn.
  void AddTask(uint64_t id, std::unique_ptr<IoTask> task);
  // I/O thread only. Destroys the task; no-op when unknown.
  void RemoveTask(uint64_t id);
  // I/O thread only. nullptr when unknown; a task found gets a turn (the
  // caller may have changed it).
  IoTask* FindTask(uint64_t id);

  zmq::context_t& context() { return context_; }
  const std::string& name() const { return name_; }

 private:
  friend class IoTask;

  struct Watched {
    void* handle = nullptr;  // the zmq socket
    int fd = -1;             // its ZMQ_FD
  };
  struct Entry {
    std::unique_ptr<IoTask> task;
    std::vector<Watched> watched;                  // registered with epoll
    absl::Time deadline = absl::InfiniteFuture();  // its key in timers_
    bool queued = false;                           // in ready_
  };

  void Run();
  // Runs the queued commands; returns false when stopping.
  bool RunCommands() ABSL_LOCKS_EXCLUDED(mu_);
  void Wake();
  // Runs one turn of `entry`'s task, then re-registers its sockets, its timer
  // and, when a socket still has input, queues another turn.
  void Turn(uint64_t id, Entry& entry, absl::Time now);
  void Queue(uint64_t id, Entry& entry);
  void Rewatch(uint64_t id, Entry& entry);
  void Unwatch(Entry& entry);
  void SetDeadline(uint64_t id, Entry& entry, absl::Time deadline);
  void Destroy(std::map<uint64_t, Entry>::iterator it);

  zmq::context_t& context_;
  const std::string name_;
  int wake_fd_ = -1;   // eventfd; readable when commands are queued
  int epoll_fd_ = -1;  // the wake fd and every task's sockets

  absl::Mutex mu_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex join_mu_;  // serialises Stop()

  // I/O thread only. Ordered so tasks are destroyed newest first.
  std::map<uint64_t, Entry> tasks_;
  std::set<std::pair<absl::Time, uint64_t>> timers_;  // tasks with a finite deadline
  std::vector<uint64_t> ready_;                       // tasks owed a turn, in order
  std::vector<zmq::socket_ref> collected_;            // Rewatch's scratch

  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace kvindex
