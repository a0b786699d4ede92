#pragma once

// ReaderLockSet: the reader locks one walk holds across many reads, each taken
// once however often the walk comes back to it, released together when the
// walk ends. A Match visits hundreds of blocks spread over a few dozen shards:
// a reader lock per shard instead of per block saves most of its lock cost.
//
// Holding several reader locks acquired in no fixed order could deadlock with
// writers (absl::Mutex makes new readers wait behind a waiting writer), so the
// set never waits while it holds anything: a lock it cannot take at once
// (ReaderTryLock fails: a writer holds it or waits for it) is taken only after
// the set has released all the others. A writer therefore waits for a walk at
// most until the walk ends or next meets a busy lock.
//
// It holds at most kMaxHeld locks (then it releases all and starts again):
// 64, a Match's every shard; 32 under ThreadSanitizer, whose deadlock
// detector aborts a thread that holds 64 locks.
//
// Thread safety: one thread's, for one walk; the locks are anyone's.

#include <cstddef>
#include <cstdint>

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/synchronization/mutex.h"

namespace kvindex {

class ReaderLockSet {
 public:
#ifdef ABSL_HAVE_THREAD_SANITIZER
  static constexpr size_t kMaxHeld = 32;
#else
  static constexpr size_t kMaxHeld = 64;
#endif

  ReaderLockSet() = default;
  ReaderLockSet(const ReaderLockSet&) = delete;
  ReaderLockSet& operator=(const ReaderLockSet&) = delete;
  ~ReaderLockSet() { ReleaseAll(); }

  // Holds `mu` as reader when this returns (waiting for it, if it must, with
  // nothing else held). `id` names `mu`: each id always the same mutex (a
  // shard's index); ids below 64 are found by a bit, others by a scan.
  void Hold(absl::Mutex& mu, uint32_t id) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    // Which locks are held is known only at run time, which the analysis cannot follow.
    const uint64_t bit = id < 64 ? uint64_t{1} << id : 0;
    if (bit != 0 ? (held_ids_ & bit) != 0 : IsHeld(mu)) return;
    if (held_.size() == kMaxHeld) ReleaseAll();
    if (held_.empty()) {
      mu.ReaderLock();
    } else if (!mu.ReaderTryLock()) {
      ReleaseAll();
      mu.ReaderLock();
    }
    held_.push_back(&mu);
    held_ids_ |= bit;
  }

  // Releases every lock held.
  void ReleaseAll() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (absl::Mutex* mu : held_) mu->ReaderUnlock();
    held_.clear();
    held_ids_ = 0;
  }

  size_t held() const { return held_.size(); }

 private:
  bool IsHeld(const absl::Mutex& mu) const {
    for (const absl::Mutex* h : held_) {
      if (h == &mu) return true;
    }
    return false;
  }

  absl::InlinedVector<absl::Mutex*, kMaxHeld> held_;
  uint64_t held_ids_ = 0;  // bit `id` of each lock held whose id is below 64
};

}  // namespace kvindex
