#pragma once

// ReplaySlots: how many of one I/O thread's workers may have a replay out at
// once. A replay holds a DEALER socket (a mailbox and a TCP connection: two
// open files) until its engine answers or it times out, which for an engine
// that is down takes the whole replay timeout. A mass subscribe (a SyncPods
// snapshot of thousands of pods, each worker asking for its warm start at
// once) would otherwise hold two more files per worker for seconds, past the
// open-files limit the process was sized for. A worker takes a slot before it
// opens its DEALER and gives it back when its replay is over; when none is
// free it waits in line and is told when one is its own. Workers whose engine
// has been heard from (live batches wait in their backlog meanwhile) are
// served before those whose engine has not.
//
// Thread safety: none; one per IoThread, used on that thread only.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"

namespace kvindex {

class ReplaySlots {
 public:
  using Holder = const void*;  // e.g. the worker's Subscriber

  // `slots` is at least 1.
  explicit ReplaySlots(size_t slots);
  ReplaySlots(const ReplaySlots&) = delete;
  ReplaySlots& operator=(const ReplaySlots&) = delete;

  // Asks for a slot for `holder`. true: it holds one (given now, or held
  // already). false: it waits in line, and `granted` runs (inside a later
  // Release, on this thread) once the slot is its own. Asking again while
  // waiting keeps the place in line and the first `granted`, except that an
  // `urgent` ask moves a waiter ahead of every non-urgent one.
  bool Acquire(Holder holder, bool urgent, absl::AnyInvocable<void()> granted);

  // Gives `holder`'s slot to the first in line, or takes `holder` out of the
  // line; no-op when it has neither.
  void Release(Holder holder);

  bool Holds(Holder holder) const { return held_.contains(holder); }
  size_t held() const { return held_.size(); }
  size_t waiting() const { return waiting_.size(); }
  size_t slots() const { return slots_; }

 private:
  struct Waiter {
    uint64_t ticket = 0;  // its entry in a line; older entries of it are stale
    bool urgent = false;
    absl::AnyInvocable<void()> granted;
  };
  using Line = std::deque<std::pair<Holder, uint64_t>>;  // (holder, ticket)

  // Pops stale entries off `line`; the first live waiter's holder, or nullptr.
  Holder FirstLive(Line& line);
  // Drops every stale entry (waiters that left the line before their turn).
  void DropStale();

  const size_t slots_;
  absl::flat_hash_set<Holder> held_;
  absl::flat_hash_map<Holder, Waiter> waiting_;
  Line urgent_;  // served first
  Line normal_;
  uint64_t next_ticket_ = 0;
};

}  // namespace kvindex
