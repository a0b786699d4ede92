#include "core/ingest/internal/io_thread.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "spdlog/spdlog.h"

namespace kvindex {
namespace {

// Longest single wait; a safety net only (the eventfd wakes the thread).
constexpr absl::Duration kMaxWait = absl::Seconds(1);

std::chrono::milliseconds PollTimeout(absl::Time deadline, absl::Time now) {
  if (deadline <= now) return std::chrono::milliseconds(0);
  absl::Duration wait = std::min(deadline - now, kMaxWait);
  return std::chrono::milliseconds(
      absl::ToInt64Milliseconds(absl::Ceil(wait, absl::Milliseconds(1))));
}

}  // namespace

IoThread::IoThread(zmq::context_t& context, std::string name)
    : context_(context), name_(std::move(name)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    // Without a wakeup fd the loop still runs, polling every kMaxWait.
    spdlog::error("io thread {}: eventfd failed: {}", name_, std::strerror(errno));
  }
  thread_ = std::thread([this] { Run(); });
}

IoThread::~IoThread() {
  Stop();
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
  tasks_[id] = std::move(task);
}

void IoThread::RemoveTask(uint64_t id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  std::unique_ptr<IoTask> task = std::move(it->second);
  tasks_.erase(it);
  task.reset();
}

IoTask* IoThread::FindTask(uint64_t id) const {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second.get();
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
  std::vector<zmq::pollitem_t> items;
  std::vector<std::pair<IoTask*, size_t>> spans;  // task, its item count
  while (RunCommands()) {
    items.clear();
    spans.clear();
    items.push_back(zmq::pollitem_t{nullptr, wake_fd_, ZMQ_POLLIN, 0});
    absl::Time deadline = absl::InfiniteFuture();
    for (auto& [id, task] : tasks_) {
      size_t before = items.size();
      task->CollectPollItems(items);
      spans.emplace_back(task.get(), items.size() - before);
      deadline = std::min(deadline, task->Deadline());
    }
    if (wake_fd_ < 0) items.front().events = 0;
    try {
      zmq::poll(items.data(), items.size(), PollTimeout(deadline, absl::Now()));
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      if (e.num() != EINTR) spdlog::error("io thread {}: poll failed: {}", name_, e.what());
      continue;
    }
    const absl::Time now = absl::Now();
    size_t offset = 1;
    for (auto [task, count] : spans) {
      // A task may not remove tasks from inside OnPoll, so the pointers stay valid.
      task->OnPoll(absl::MakeConstSpan(items.data() + offset, count), now);
      offset += count;
    }
  }
  // Stop(): commands were run above; close every socket on this thread, newest task first.
  while (!tasks_.empty()) {
    auto last = std::prev(tasks_.end());
    std::unique_ptr<IoTask> task = std::move(last->second);
    tasks_.erase(last);
    task.reset();
  }
}

}  // namespace kvindex
