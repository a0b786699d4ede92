#include "core/util/open_files.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvindex {

absl::StatusOr<OpenFilesLimit> RaiseOpenFilesLimit(uint64_t needed) {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  const uint64_t hard = limit.rlim_max == RLIM_INFINITY ? UINT64_MAX : limit.rlim_max;
  const uint64_t soft = limit.rlim_cur == RLIM_INFINITY ? UINT64_MAX : limit.rlim_cur;
  const uint64_t target = std::min(needed, hard);
  if (target > soft) {
    limit.rlim_cur = static_cast<rlim_t>(target);
    if (setrlimit(RLIMIT_NOFILE, &limit) == 0) return OpenFilesLimit{target, hard};
  }
  return OpenFilesLimit{soft, hard};
}

}  // namespace kvindex
