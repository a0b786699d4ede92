#include "core/index/internal/reader_lock_set.h"

#include <deque>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

// The tests take and give back locks in ways the thread-safety analysis
// cannot follow (try-locks, a lock held across threads' steps): these helpers
// keep it out.

// Whether a writer (or a reader) could take `mu` now; given back at once.
bool WriterCanTake(absl::Mutex& mu) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (!mu.TryLock()) return false;
  mu.Unlock();
  return true;
}
bool ReaderCanTake(absl::Mutex& mu) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (!mu.ReaderTryLock()) return false;
  mu.ReaderUnlock();
  return true;
}

// Takes `mu` as writer, trying until `timeout` passes; false if it never could.
bool LockWithin(absl::Mutex& mu, absl::Duration timeout) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const absl::Time deadline = absl::Now() + timeout;
  while (!mu.TryLock()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

void Lock(absl::Mutex& mu) ABSL_NO_THREAD_SAFETY_ANALYSIS { mu.Lock(); }
void Unlock(absl::Mutex& mu) ABSL_NO_THREAD_SAFETY_ANALYSIS { mu.Unlock(); }

TEST(ReaderLockSetTest, TakesEachLockOnceAndReleasesAllAtTheEnd) {
  absl::Mutex a, b;
  {
    ReaderLockSet set;
    set.Hold(a, 0);
    set.Hold(b, 1);
    set.Hold(a, 0);
    EXPECT_EQ(set.held(), 2u);
    EXPECT_FALSE(WriterCanTake(a));  // held as reader: no writer gets in
    EXPECT_TRUE(ReaderCanTake(a));   // other readers do
  }
  EXPECT_TRUE(WriterCanTake(a));
  EXPECT_TRUE(WriterCanTake(b));
}

TEST(ReaderLockSetTest, IdsFromSixtyFourOnAreToldApartByTheLockItself) {
  absl::Mutex a, b;
  ReaderLockSet set;
  set.Hold(a, 100);
  set.Hold(b, 36);  // 100 % 64: must not be taken for a
  set.Hold(a, 100);
  EXPECT_EQ(set.held(), 2u);
  EXPECT_FALSE(WriterCanTake(b));
  set.ReleaseAll();
  EXPECT_EQ(set.held(), 0u);
  EXPECT_TRUE(WriterCanTake(b));
}

TEST(ReaderLockSetTest, StartsAgainPastItsLimit) {
  std::deque<absl::Mutex> locks(ReaderLockSet::kMaxHeld + 1);
  ReaderLockSet set;
  for (uint32_t i = 0; i < locks.size(); ++i) set.Hold(locks[i], i);
  EXPECT_EQ(set.held(), 1u);
  EXPECT_TRUE(WriterCanTake(locks[0]));  // released when the last came
  EXPECT_FALSE(WriterCanTake(locks.back()));
}

// The deadlock the set exists to avoid: it holds A and needs B, which a writer
// holds while it waits for A. Waiting for B with A held would hang both; the
// set releases A first, so the writer gets A, and the set gets B once the
// writer is done.
TEST(ReaderLockSetTest, ReleasesWhatItHoldsBeforeWaiting) {
  absl::Mutex a, b;
  absl::Notification holds_a, got_b;
  Lock(b);
  std::thread reader([&] {
    ReaderLockSet set;
    set.Hold(a, 0);
    holds_a.Notify();
    set.Hold(b, 1);
    got_b.Notify();
  });
  EXPECT_TRUE(holds_a.WaitForNotificationWithTimeout(absl::Seconds(30)));
  const bool writer_got_a = LockWithin(a, absl::Seconds(30));
  EXPECT_TRUE(writer_got_a) << "the set waited for B while holding A";
  EXPECT_FALSE(got_b.HasBeenNotified());  // B is still the writer's
  if (writer_got_a) Unlock(a);
  Unlock(b);
  EXPECT_TRUE(got_b.WaitForNotificationWithTimeout(absl::Seconds(30)));
  reader.join();
}

}  // namespace
}  // namespace kvindex
