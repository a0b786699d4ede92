#include "core/ingest/internal/resume_book.h"

#include <string>
#include <utility>

#include "core/ingest/internal/subscription_identity.h"
#include "spdlog/spdlog.h"

namespace kvindex {

ResumeBook::ResumeBook(const std::vector<WorkerResume>& saved) {
  for (const WorkerResume& r : saved) saved_.insert_or_assign(r.worker, r);
}

std::optional<BatchCursor> ResumeBook::Take(const WorkerKey& worker, const Pod& pod, const PodPlan& plan,
                                            bool& stale) {
  stale = false;
  auto it = saved_.find(worker);
  if (it == saved_.end()) return std::nullopt;
  const WorkerResume saved = std::move(it->second);
  saved_.erase(it);
  const std::string changed = Changes(IdentityOf(saved.pod, PlanPod(saved.pod)), IdentityOf(pod, plan));
  if (!changed.empty()) {
    spdlog::info("worker {}: snapshot not resumed ({} changed): replayed from 0", WorkerKeyString(worker), changed);
    stale = true;
    return std::nullopt;
  }
  spdlog::info("worker {}: resumes from the snapshot after seq {}", WorkerKeyString(worker), saved.cursor.seq);
  return saved.cursor;
}

void ResumeBook::DropUnused(PrefixIndex* index) {
  for (const auto& [worker, saved] : saved_) {
    spdlog::info("worker {}: in the snapshot, not followed: its blocks are dropped", WorkerKeyString(worker));
    if (index != nullptr) index->RemoveWorker(worker);
  }
  saved_.clear();
}

}  // namespace kvindex
