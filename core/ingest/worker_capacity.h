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
// eventfd) and a TCP connection to its engine. A replay adds a DEALER (two
// more) while it is out (at subscribe time, after a gap), not counted: it
// lasts until the engine answers or the replay times out.
// ZeroMQ sockets (a context-wide count) include the DEALER; files do not.
inline constexpr size_t kSocketsPerWorker = 2;
inline constexpr size_t kFilesPerWorker = 2;
// Files the rest of the process may use (gRPC, the metrics server, logs, ...).
inline constexpr size_t kFilesBesidesWorkers = 256;

// Open files needed to follow `max_workers`, and how many workers `open_files` allow.
size_t OpenFilesNeeded(size_t max_workers);
size_t WorkersThatFit(size_t open_files);
// Workers whose sockets `open_files` allow (one file each), engines not connected.
size_t WorkerSocketsThatFit(size_t open_files);

// The ZeroMQ socket count a context following `max_workers` needs (plus
// spares), within what ZeroMQ allows in `context`.
int MaxSockets(zmq::context_t& context, size_t max_workers);

}  // namespace kvindex
