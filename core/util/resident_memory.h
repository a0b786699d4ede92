#pragma once

// A process's resident set size, as /proc reports it: the server's
// process_resident_memory_bytes, and the memory checks of the tests, the soak
// and the ingest bench on the processes they start. Any thread.

#include <cstdint>

namespace kvindex {

// Resident bytes of process `pid`; 0 when unreadable (e.g. it has exited).
uint64_t ResidentBytes(int pid);
// Resident bytes of this process; 0 when unreadable.
uint64_t ResidentBytes();

}  // namespace kvindex
