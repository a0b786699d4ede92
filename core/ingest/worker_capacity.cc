#include "core/ingest/worker_capacity.h"

#include <algorithm>

namespace kvindex {

size_t OpenFilesNeeded(size_t max_workers) { return kFilesPerWorker * max_workers + kFilesBesidesWorkers; }

size_t WorkersThatFit(size_t open_files) {
  return open_files > kFilesBesidesWorkers ? (open_files - kFilesBesidesWorkers) / kFilesPerWorker : 0;
}

size_t WorkerSocketsThatFit(size_t open_files) {
  return open_files > kFilesBesidesWorkers ? open_files - kFilesBesidesWorkers : 0;
}

int MaxSockets(zmq::context_t& context, size_t max_workers) {
  const size_t wanted = kSocketsPerWorker * max_workers + 64;  // + the bind receiver, inproc spares
  const auto limit = static_cast<size_t>(std::max(1024, context.get(zmq::ctxopt::socket_limit)));
  return static_cast<int>(std::min(wanted, limit));
}

}  // namespace kvindex
