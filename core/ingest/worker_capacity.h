#pragma once

// What following workers costs the process: ZeroMQ sockets and open files per
// worker, and how many workers a given open-files limit carries. kvindex-server
// sizes its open-files limit and --max_workers from these at start; the
// SubscriptionManager sizes its ZeroMQ context.
//
// Constants and pure functions; any thread.

#include <cstddef>

#include "zmq.hpp"

namespace kvindex {

// What one subscribed worker holds: its SUB socket, i.e. a mailbox (an
// eventfd) and a TCP connection to its engine.
inline constexpr size_t kSocketsPerWorker = 1;
inline constexpr size_t kFilesPerWorker = 2;
// What a replay holds while it is out (at subscribe time, after a gap): a
// DEALER, i.e. a mailbox and a TCP connection. At most --max_concurrent_replays
// are out at once (ReplaySlots), so a mass subscribe stays within the files
// counted here.
inline constexpr size_t kSocketsPerReplay = 1;
inline constexpr size_t kFilesPerReplay = 2;
// Files the rest of the process may use (gRPC, the metrics server, logs, ...).
inline constexpr size_t kFilesBesidesWorkers = 256;

// Open files needed to follow `max_workers` with up to `max_replays` replays
// out at once, and how many workers `open_files` allow.
size_t OpenFilesNeeded(size_t max_workers, size_t max_replays);
size_t WorkersThatFit(size_t open_files, size_t max_replays);
// Workers whose sockets `open_files` allow (one file each), engines not connected.
size_t WorkerSocketsThatFit(size_t open_files, size_t max_replays);

// The ZeroMQ socket count a context following `max_workers` with up to
// `max_replays` replays out needs (plus spares), within what ZeroMQ allows in
// `context`.
int MaxSockets(zmq::context_t& context, size_t max_workers, size_t max_replays);

}  // namespace kvindex
