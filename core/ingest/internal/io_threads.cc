#include "core/ingest/internal/io_threads.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/ingest/internal/completion.h"
#include "core/ingest/worker_capacity.h"
#include "spdlog/spdlog.h"

namespace kvindex {
namespace {

constexpr int kMaxIoThreads = 64;

}  // namespace

absl::StatusOr<IoThreads> IoThreads::Start(int threads, size_t max_workers, size_t max_replays,
                                           const std::string& events_bind, BindCounters* counters) {
  IoThreads io;
  const int n = std::clamp(threads, 1, kMaxIoThreads);
  io.context = std::make_unique<zmq::context_t>(n);  // ZeroMQ's own I/O threads
  io.context->set(zmq::ctxopt::max_sockets, MaxSockets(*io.context, max_workers, max_replays));
  for (int i = 0; i < n; ++i) {
    io.replay_slots.push_back(std::make_unique<ReplaySlots>(max_replays / n));
    io.threads.push_back(std::make_unique<IoThread>(*io.context, absl::StrCat("kv-io-", i)));
  }
  if (events_bind.empty()) return io;
  auto completion = std::make_shared<Completion>();
  BindReceiver* receiver = nullptr;
  std::string bound;
  io.threads[0]->Post([&receiver, &bound, completion, &events_bind, counters](IoThread& thread) {
    absl::StatusOr<std::unique_ptr<BindReceiver>> created =
        BindReceiver::Create(thread.context(), events_bind, counters);
    if (!created.ok()) {
      completion->Finish(created.status());
      return;
    }
    receiver = created->get();
    bound = (*created)->endpoint();
    thread.AddTask(kBindReceiverTask, *std::move(created));
    completion->Finish(absl::OkStatus());
  });
  // Waits without a bound: `receiver` and `bound` live on this stack frame.
  std::optional<absl::Status> status = completion->Wait(absl::InfiniteDuration());
  if (!status->ok()) {
    io.Stop();
    return *status;
  }
  io.bind_receiver = receiver;
  io.bind_endpoint = bound;
  spdlog::info("kv events bind endpoint {}", bound);
  return io;
}

void IoThreads::Stop() {
  for (auto& thread : threads) thread->Stop();
  threads.clear();
  replay_slots.clear();
  bind_receiver = nullptr;
  context.reset();
}

}  // namespace kvindex
