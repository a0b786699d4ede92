#include "core/ingest/internal/io_thread.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace kvindex {
namespace {

// Longest single wait; a safety net only (the eventfd wakes the thread).
constexpr absl::Duration kMaxWait = absl::Seconds(1);
// Without epoll (epoll_create1 failed) every task gets a turn this often.
constexpr absl::Duration kFallbackTick = absl::Milliseconds(10);
// The epoll data of the wake fd; task ids are below it.
constexpr uint64_t kWakeId = ~uint64_t{0};
constexpr int kMaxEventsPerWait = 256;

int WaitMillis(absl::Time deadline, absl::Time now) {
  if (deadline <= now) return 0;
  const absl::Duration wait = std::min(deadline - now, kMaxWait);
  return static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(wait, absl::Milliseconds(1))));
}

int SocketFd(void* handle) {
  int fd = -1;
  size_t size = sizeof(fd);
  return zmq_getsockopt(handle, ZMQ_FD, &fd, &size) == 0 ? fd : -1;
}

bool HasInput(void* handle) {
  int events = 0;
  size_t size = sizeof(events);
  return zmq_getsockopt(handle, ZMQ_EVENTS, &events, &size) == 0 && (events & ZMQ_POLLIN) != 0;
}

}  // namespace

void IoTask::RequestTurn() {
  if (thread_ == nullptr) return;
  auto it = thread_->tasks_.find(id_);
  if (it != thread_->tasks_.end()) thread_->Queue(id_, it->second);
}

IoThread::IoThread(zmq::context_t& context, std::string name)
    : context_(context), name_(std::move(name)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    // Without a wakeup fd the loop still runs, waking every kMaxWait.
    spdlog::error("io thread {}: eventfd failed: {}", name_, std::strerror(errno));
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    spdlog::error("io thread {}: epoll_create1 failed: {}; every task gets a turn every {}", name_,
                  std::strerror(errno), absl::FormatDuration(kFallbackTick));
  } else if (wake_fd_ >= 0) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kWakeId;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event) != 0) {
      spdlog::error("io thread {}: cannot watch its wake fd: {}", name_, std::strerror(errno));
    }
  }
  thread_ = std::thread([this] { Run(); });
}

IoThread::~IoThread() {
  Stop();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

bool IoThread::Post(Command command) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    commands_.push_back(std::move(command));
  }
  Wake();
  return true;
}

void IoThread::Stop() {
  absl::MutexLock join_lock(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
}

void IoThread::Wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  // A full counter (EAGAIN) already means "wake up".
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void IoThread::AddTask(uint64_t id, std::unique_ptr<IoTask> task) {
  task->thread_ = this;
  task->id_ = id;
  Entry& entry = tasks_[id];
  entry.task = std::move(task);
  Rewatch(id, entry);
  Queue(id, entry);
}

void IoThread::RemoveTask(uint64_t id) {
  auto it = tasks_.find(id);
  if (it != tasks_.end()) Destroy(it);
}

IoTask* IoThread::FindTask(uint64_t id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return nullptr;
  Queue(id, it->second);
  return it->second.task.get();
}

void IoThread::Destroy(std::map<uint64_t, Entry>::iterator it) {
  Entry entry = std::move(it->second);
  SetDeadline(it->first, entry, absl::InfiniteFuture());
  tasks_.erase(it);  // a stale id in ready_ or a late epoll event finds nothing
  Unwatch(entry);
  entry.task.reset();
}

void IoThread::Queue(uint64_t id, Entry& entry) {
  if (entry.queued) return;
  entry.queued = true;
  ready_.push_back(id);
}

void IoThread::SetDeadline(uint64_t id, Entry& entry, absl::Time deadline) {
  if (deadline == entry.deadline) return;
  if (entry.deadline != absl::InfiniteFuture()) timers_.erase({entry.deadline, id});
  entry.deadline = deadline;
  if (deadline != absl::InfiniteFuture()) timers_.emplace(deadline, id);
}

void IoThread::Unwatch(Entry& entry) {
  for (const Watched& w : entry.watched) {
    // A socket closed during the turn may have lost its fd already (ENOENT, EBADF).
    if (epoll_fd_ >= 0 && w.fd >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w.fd, nullptr);
  }
  entry.watched.clear();
}

void IoThread::Rewatch(uint64_t id, Entry& entry) {
  std::vector<zmq::socket_ref>& sockets = collected_;  // reused: a turn allocates nothing
  sockets.clear();
  entry.task->CollectSockets(sockets);
  const bool same = sockets.size() == entry.watched.size() &&
                    std::equal(sockets.begin(), sockets.end(), entry.watched.begin(),
                               [](zmq::socket_ref s, const Watched& w) { return s.handle() == w.handle; });
  if (same) return;
  // By handle, not fd: a socket closed this turn may have handed its fd number
  // to one opened this turn, so every old one goes before any new one comes.
  Unwatch(entry);
  for (zmq::socket_ref socket : sockets) {
    Watched w{socket.handle(), SocketFd(socket.handle())};
    if (epoll_fd_ >= 0 && w.fd >= 0) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u64 = id;
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w.fd, &event) != 0 &&
          (errno != EEXIST || epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, w.fd, &event) != 0)) {
        spdlog::error("io thread {}: cannot watch a socket of task {}: {}", name_, id, std::strerror(errno));
      }
    }
    entry.watched.push_back(w);
  }
}

void IoThread::Turn(uint64_t id, Entry& entry, absl::Time now) {
  entry.task->OnReady(now);
  Rewatch(id, entry);
  SetDeadline(id, entry, entry.task->Deadline());
  // ZMQ_FD signals only changes: input left over (the task read a bounded
  // number of messages) would not wake epoll again, so it gets a turn now.
  for (const Watched& w : entry.watched) {
    if (HasInput(w.handle)) {
      Queue(id, entry);
      break;
    }
  }
}

bool IoThread::RunCommands() {
  if (wake_fd_ >= 0) {
    uint64_t count;
    [[maybe_unused]] ssize_t n = read(wake_fd_, &count, sizeof(count));
  }
  std::deque<Command> batch;
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(commands_);
    stopping = stopping_;
  }
  for (Command& command : batch) std::move(command)(*this);
  return !stopping;
}

void IoThread::Run() {
  std::vector<epoll_event> events(kMaxEventsPerWait);
  std::vector<uint64_t> turns;
  while (RunCommands()) {
    const absl::Time next = timers_.empty() ? absl::InfiniteFuture() : timers_.begin()->first;
    const int wait_ms = ready_.empty() ? WaitMillis(next, absl::Now()) : 0;
    if (epoll_fd_ >= 0) {
      const int n = epoll_wait(epoll_fd_, events.data(), kMaxEventsPerWait, wait_ms);
      if (n < 0 && errno != EINTR) spdlog::error("io thread {}: epoll_wait: {}", name_, std::strerror(errno));
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id == kWakeId) continue;  // the commands run at the top of the loop
        if (auto it = tasks_.find(id); it != tasks_.end()) Queue(id, it->second);
      }
    } else {
      absl::SleepFor(std::min(absl::Milliseconds(wait_ms), kFallbackTick));
      for (auto& [id, entry] : tasks_) Queue(id, entry);
    }
    const absl::Time now = absl::Now();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      const uint64_t id = timers_.begin()->second;
      auto it = tasks_.find(id);
      SetDeadline(id, it->second, absl::InfiniteFuture());
      Queue(id, it->second);
    }
    // Turns queued during these turns (RequestTurn, leftover input) run next time round.
    turns.clear();
    turns.swap(ready_);
    for (uint64_t id : turns) {
      // A task may not remove tasks from inside OnReady, so `entry` stays valid.
      auto it = tasks_.find(id);
      if (it == tasks_.end()) continue;
      it->second.queued = false;
      Turn(id, it->second, now);
    }
  }
  // Stop(): commands were run above; close every socket on this thread, newest task first.
  while (!tasks_.empty()) Destroy(std::prev(tasks_.end()));
}

}  // namespace kvindex
