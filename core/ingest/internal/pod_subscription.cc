#include "core/ingest/internal/pod_subscription.h"

#include <utility>

namespace kvindex {

std::shared_ptr<Completion> PostSubscription(IoThread& thread, PodSubscription subscription,
                                             SubscriptionFactory& factory) {
  auto completion = std::make_shared<Completion>();
  const bool posted =
      thread.Post([completion, s = std::move(subscription), &factory](IoThread& io) mutable {
        absl::Status result;
        for (const WorkerKey& worker : s.stale) s.index->RemoveWorker(worker);
        for (size_t rank = 0; rank < s.configs.size(); ++rank) {
          absl::StatusOr<std::unique_ptr<WorkerSubscription>> subscriber =
              factory.Create(io.context(), std::move(s.configs[rank]), s.index, s.cells[rank]);
          if (!subscriber.ok()) {
            result.Update(subscriber.status());
            continue;
          }
          if (s.receiver != nullptr) {
            s.receiver->Route(s.ip, s.events_port + static_cast<uint32_t>(rank), rank == 0, s.model,
                              subscriber->get());
          }
          io.AddTask(s.task_ids[rank], *std::move(subscriber));
        }
        completion->Finish(std::move(result));
      });
  if (!posted) completion->Finish(absl::CancelledError("manager stopping"));
  return completion;
}

}  // namespace kvindex
