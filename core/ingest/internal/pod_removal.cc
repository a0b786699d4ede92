#include "core/ingest/internal/pod_removal.h"

#include <utility>

#include "core/ingest/internal/worker_subscription.h"

namespace kvindex {

std::shared_ptr<Completion> PostRemoval(IoThread& thread, std::vector<uint64_t> ids, std::string key,
                                        PrefixIndex* index, BindReceiver* receiver,
                                        const std::function<void(std::string_view)>& before_removal) {
  auto completion = std::make_shared<Completion>();
  const bool posted = thread.Post([ids = std::move(ids), key = std::move(key), index, receiver, completion,
                                   before_removal](IoThread& io) {
        for (uint64_t id : ids) {
          if (receiver != nullptr) {
            if (auto* subscriber = static_cast<WorkerSubscription*>(io.FindTask(id))) {
              receiver->Unroute(subscriber);
            }
          }
          io.RemoveTask(id);
        }
        if (before_removal) before_removal(key);
        index->RemovePod(key);
        completion->Finish(absl::OkStatus());
      });
  if (!posted) completion->Finish(absl::CancelledError("manager stopping"));
  return completion;
}

}  // namespace kvindex
