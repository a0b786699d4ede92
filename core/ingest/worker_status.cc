#include "core/ingest/worker_status.h"

namespace kvindex {

std::string_view WorkerStateName(WorkerState state) {
  switch (state) {
    case WorkerState::kConnecting:
      return "connecting";
    case WorkerState::kLive:
      return "live";
    case WorkerState::kReplaying:
      return "replaying";
    case WorkerState::kFailed:
      return "failed";
  }
  return "unknown";
}

}  // namespace kvindex
