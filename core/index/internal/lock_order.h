#pragma once

// The locks of the prefix index and their order, written once. PrefixIndex is
// a front over parts with one kind of lock each; every such lock is one of the
// types below. A thread that holds several acquires them in this order,
// outermost first, and never two of the same level (two workers, two shards):
//
//   1. DirectoryLock  WorkerDirectory: which workers exist, by key, id and pod.
//   2. ExportLock     WorkerBlocks, one per worker: one export of the worker at
//                     a time (held across the export's many WorkerLock holds;
//                     Apply never takes it).
//   3. WorkerLock     WorkerBlocks, one per worker: its engine blocks, aliases,
//                     queued holder updates and accounting.
//   4. SpeculativeLock SpeculativeTable: the speculative entries (routing hints).
//   5. ContextsLock   ContextRegistry: the block sizes in use per (model, LoRA).
//   6. ShardLock      BlockTable, one per shard: the holders of its blocks.
//
// MediumTable's own mutex (registration of a new medium name) comes after all
// of them: it is taken only inside MediumTable::BitOf, which calls nothing.
//
// Who nests what: a worker applying events holds its WorkerLock while it
// registers a context (ContextRegistry::Use/Release) and while it carries out
// its holder updates, one shard lock at a time (BlockTable::Apply); those calls
// take the caller's WorkerLock as an argument and require it held, so the
// nesting is visible to the analysis. A worker writes, confirms and drops its
// speculative entries under its WorkerLock (SpeculativeTable's calls require
// it), and takes no other lock while the table's is held. Match holds one
// part's locks at a time (the directory's, the registry's, shard locks as
// reader, the speculative table's as reader before a block's shard lock when
// it holds entries). Its walk keeps
// the shard locks it has taken in a ReaderLockSet, several at once in no fixed
// order, which is safe because the set never waits while it holds one (it
// tries, and on failure releases all before waiting); it releases them all
// before it takes the speculative table's lock.
// Nothing is acquired under the directory lock, and no part calls out while
// holding its own lock except into parts later in this order.
//
// Checked by the compiler: each lock names the later ones with
// ABSL_ACQUIRED_BEFORE, so acquiring one while holding a later one fails the
// thread-safety build (CMake KVINDEX_THREAD_SAFETY: clang -Wthread-safety as
// errors; the order check itself is part of -Wthread-safety-beta, which
// core/index/CMakeLists.txt adds for kvindex_index). The analysis follows one
// function at a time, plus the locks its annotations say it holds on entry;
// it does not follow plain calls, hence the rule above on calling out.

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvindex {

// Declared innermost first: ABSL_ACQUIRED_BEFORE names locks declared above it.

struct ShardLock {
  mutable absl::Mutex mu;
};

struct ContextsLock {
  // Never held with a ShardLock today; the order only fixes which comes first if one ever is.
  mutable absl::Mutex mu ABSL_ACQUIRED_BEFORE(ShardLock::mu);
};

struct SpeculativeLock {
  // Never held with ContextsLock or a ShardLock: the order only fixes which comes first if one ever is.
  mutable absl::Mutex mu ABSL_ACQUIRED_BEFORE(ContextsLock::mu, ShardLock::mu);
};

struct WorkerLock {
  mutable absl::Mutex mu ABSL_ACQUIRED_BEFORE(SpeculativeLock::mu, ContextsLock::mu, ShardLock::mu);
};

struct ExportLock {
  mutable absl::Mutex mu ABSL_ACQUIRED_BEFORE(WorkerLock::mu);
};

struct DirectoryLock {
  mutable absl::Mutex mu ABSL_ACQUIRED_BEFORE(ExportLock::mu, WorkerLock::mu);
};

}  // namespace kvindex
