#pragma once

// PostRemoval: how a pod leaves — its workers' sockets closed, then its blocks
// dropped, in that order on the pod's I/O thread.
//
// Thread safety: PostRemoval may be called from any thread; the removal runs
// on `thread`.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/index/prefix_index.h"
#include "core/ingest/internal/bind_receiver.h"
#include "core/ingest/internal/completion.h"
#include "core/ingest/internal/io_thread.h"

namespace kvindex {

// Posts the removal of a subscription's sockets, then of the pod's blocks: on
// the pod's thread, after the sockets are gone, so no batch of it lands later.
// The completion finishes once the blocks are gone.
std::shared_ptr<Completion> PostRemoval(IoThread& thread, std::vector<uint64_t> ids, std::string key,
                                        PrefixIndex* index, BindReceiver* receiver,
                                        const std::function<void(std::string_view)>& before_removal);

}  // namespace kvindex
