#include "core/index/worker_snapshot.h"

#include <xxhash.h>

namespace kvindex {

uint64_t BatchDigest(std::string_view payload) { return XXH3_64bits(payload.data(), payload.size()); }

}  // namespace kvindex
