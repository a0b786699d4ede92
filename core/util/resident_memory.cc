#include "core/util/resident_memory.h"

#include <unistd.h>

#include <cstdio>
#include <string>

namespace kvindex {
namespace {

// /proc/<pid>/statm: "size resident shared ..." in pages.
uint64_t ResidentBytesFrom(const std::string& statm) {
  std::FILE* f = std::fopen(statm.c_str(), "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int read = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  const long page = sysconf(_SC_PAGESIZE);
  return read == 2 && page > 0 ? resident * static_cast<uint64_t>(page) : 0;
}

}  // namespace

uint64_t ResidentBytes(int pid) { return ResidentBytesFrom("/proc/" + std::to_string(pid) + "/statm"); }

uint64_t ResidentBytes() { return ResidentBytesFrom("/proc/self/statm"); }

}  // namespace kvindex
