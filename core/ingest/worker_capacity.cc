#include "core/ingest/worker_capacity.h"

#include <algorithm>

namespace kvindex {

namespace {

size_t FilesBesidesWorkers(size_t max_replays) { return kFilesBesidesWorkers + kFilesPerReplay * max_replays; }

}  // namespace

size_t OpenFilesNeeded(size_t max_workers, size_t max_replays) {
  return kFilesPerWorker * max_workers + FilesBesidesWorkers(max_replays);
}

size_t WorkersThatFit(size_t open_files, size_t max_replays) {
  const size_t besides = FilesBesidesWorkers(max_replays);
  return open_files > besides ? (open_files - besides) / kFilesPerWorker : 0;
}

size_t WorkerSocketsThatFit(size_t open_files, size_t max_replays) {
  const size_t besides = FilesBesidesWorkers(max_replays);
  return open_files > besides ? open_files - besides : 0;
}

int MaxSockets(zmq::context_t& context, size_t max_workers, size_t max_replays) {
  // + the bind receiver, inproc spares.
  const size_t wanted = kSocketsPerWorker * max_workers + kSocketsPerReplay * max_replays + 64;
  const auto limit = static_cast<size_t>(std::max(1024, context.get(zmq::ctxopt::socket_limit)));
  return static_cast<int>(std::min(wanted, limit));
}

}  // namespace kvindex
