// ThreadSanitizer annotations for Debian's (uninstrumented) Abseil.
//
// Debian builds libabsl_synchronization without -fsanitize=thread, so the
// ABSL_TSAN_MUTEX_* annotations inside absl::Mutex compile to nothing and the
// futex/atomics it synchronises with are invisible to TSan: every access to
// data guarded by an absl::Mutex looks like a race. This file restores what an
// instrumented Abseil would tell TSan, and nothing more.
//
// How: in a TSan build (and only there; see sanitizers.cmake) this object is
// linked into every executable and *defines* the out-of-line entry points of
// absl::Mutex, absl::CondVar and absl::Notification. Those definitions take
// precedence over the shared library's for calls from our objects (they bind
// at link time; the executable does not export them, so shared libraries such
// as gRPC keep using Abseil's own). Each one wraps the library's
// real function (found with dlsym(RTLD_NEXT)) in exactly the annotation calls
// that Abseil's own mutex.cc makes when it is built with TSan
// (ABSL_TSAN_MUTEX_PRE_LOCK / POST_LOCK / PRE_UNLOCK / POST_UNLOCK, see
// absl/base/internal/tsan_mutex_interface.h):
//   __tsan_mutex_pre_lock   before locking  (memory accesses ignored until post)
//   __tsan_mutex_post_lock  after locking   (acquire: sees every earlier unlocker's writes)
//   __tsan_mutex_pre_unlock before unlocking (release: publishes this thread's writes)
//   __tsan_mutex_post_unlock after unlocking
// Why this is sound: the release is recorded before the real unlock and the
// acquire after the real lock, so TSan only ever learns happens-before edges
// that the real mutex does create; it never learns one that does not exist.
// Accesses made *inside* the library calls (Abseil evaluating an
// absl::Condition, possibly on the unlocking thread) fall between a pre and a
// post annotation and are ignored, exactly as with an instrumented Abseil's
// "delicate annotation dance" minus the re-checking of the condition's reads.
//
// Await/CondVar::Wait release and re-acquire the mutex inside the call; they
// are annotated as an unlock before and a lock after. Whether the mutex is held
// shared or exclusively is tracked per thread (ReaderLock* calls), because TSan
// checks that a reader unlock matches a reader lock.
//
// Only calls from the executable's own (instrumented) code are annotated; a
// call from a shared library (should one ever bind here) is passed straight
// through: a library such as
// Abseil (Notification and CondVar use their own Mutex) or gRPC reaches some
// of these entry points through the PLT and others internally, so annotating
// them would show TSan half of a mutex's operations; their memory accesses
// are not checked anyway (tsan.supp), and Notification is annotated directly.
// Calls made while one of these definitions runs (AwaitWithTimeout tail-calls
// AwaitWithDeadline) belong to the outer, already annotated, operation.
//
// absl::Notification: Notify() releases on the notification (and on its
// notified_yet_ flag, which the inline HasBeenNotified() loads with acquire
// order, an instrumented atomic); a waiter that returns "notified" acquires.

#include <dlfcn.h>
#include <link.h>
#include <sanitizer/tsan_interface.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#if !ABSL_OPTION_USE_INLINE_NAMESPACE
#error "the mangled names below assume Abseil's inline namespace (Debian: debian3)"
#endif

// absl::Notification is {Mutex mutex_; std::atomic<bool> notified_yet_;}.
static_assert(sizeof(absl::Notification) == 2 * sizeof(absl::Mutex),
              "absl::Notification layout changed; update NotifiedFlag()");

namespace {

#define KVINDEX_STR2(x) #x
#define KVINDEX_STR(x) KVINDEX_STR2(x)

// "_ZN4absl7debian3" + suffix (or "_ZNK..." for const members), then the real
// definition in the next object that has one (libabsl_synchronization).
void* RealFunction(const char* suffix, bool const_member) {
  const char* ns = KVINDEX_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string name = const_member ? "_ZNK4absl" : "_ZN4absl";
  name += std::to_string(std::strlen(ns));
  name += ns;
  name += suffix;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "kvindex TSan annotations: %s not found in Abseil\n", name.c_str());
    std::abort();
  }
  return fn;
}

// Address range of the main executable's loaded segments.
struct CodeRange {
  uintptr_t begin = ~uintptr_t{0};
  uintptr_t end = 0;
};

CodeRange ExecutableRange() {
  CodeRange range;
  dl_iterate_phdr(
      [](dl_phdr_info* object, size_t, void* data) {
        auto* r = static_cast<CodeRange*>(data);
        for (int i = 0; i < object->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = object->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          r->begin = std::min<uintptr_t>(r->begin, object->dlpi_addr + ph.p_vaddr);
          r->end = std::max<uintptr_t>(r->end, object->dlpi_addr + ph.p_vaddr + ph.p_memsz);
        }
        return 1;  // the first object is the executable
      },
      &range);
  return range;
}

// Whether `caller` (a return address) is code of the executable, i.e. ours
// (compiled with -fsanitize=thread), as opposed to a shared library's.
bool FromExecutable(void* caller) {
  static const CodeRange exe = ExecutableRange();
  const auto pc = reinterpret_cast<uintptr_t>(caller);
  return exe.begin <= pc && pc < exe.end;
}

// How many of the definitions below this thread is inside. A real function
// may reach another one (AwaitWithTimeout tail-calls AwaitWithDeadline): that
// inner call is part of the outer, already annotated, operation.
thread_local int wrapper_depth = 0;

struct DepthGuard {
  DepthGuard() { ++wrapper_depth; }
  ~DepthGuard() { --wrapper_depth; }
};

// Whether a call from `caller` goes straight to the real function.
bool Passthrough(void* caller) { return wrapper_depth > 0 || !FromExecutable(caller); }

// Resolved once per function, on first use (static init is thread-safe).
#define KVINDEX_REAL(type, suffix, is_const) \
  static const auto real = reinterpret_cast<type>(RealFunction(suffix, is_const))

// Mutexes this thread holds in shared (reader) mode. Await and CondVar::Wait
// need the mode to annotate their internal unlock and re-lock.
constexpr int kMaxReaderLocks = 64;
thread_local const void* reader_locks[kMaxReaderLocks];
thread_local int reader_lock_count = 0;

void PushReader(const void* mu) {
  if (reader_lock_count < kMaxReaderLocks) reader_locks[reader_lock_count] = mu;
  ++reader_lock_count;
}

void PopReader(const void* mu) {
  const int n = reader_lock_count < kMaxReaderLocks ? reader_lock_count : kMaxReaderLocks;
  for (int i = n - 1; i >= 0; --i) {
    if (reader_locks[i] == mu) {
      reader_locks[i] = reader_locks[n - 1];
      break;
    }
  }
  if (reader_lock_count > 0) --reader_lock_count;
}

unsigned HeldFlags(const void* mu) {
  const int n = reader_lock_count < kMaxReaderLocks ? reader_lock_count : kMaxReaderLocks;
  for (int i = 0; i < n; ++i) {
    if (reader_locks[i] == mu) return __tsan_mutex_read_lock;
  }
  return 0;
}

// Around a call that releases `mu` and takes it back in the same mode.
struct RelockScope {
  explicit RelockScope(void* mu) : mu(mu), flags(HeldFlags(mu)) { __tsan_mutex_pre_unlock(mu, flags); }
  ~RelockScope() {
    __tsan_mutex_post_unlock(mu, flags);
    __tsan_mutex_pre_lock(mu, flags);
    __tsan_mutex_post_lock(mu, flags, 0);
  }
  void* mu;
  unsigned flags;
};

// Around a call that takes `mu` (with `flags`) and returns holding it.
struct LockScope {
  LockScope(void* mu, unsigned flags) : mu(mu), flags(flags) { __tsan_mutex_pre_lock(mu, flags); }
  ~LockScope() {
    __tsan_mutex_post_lock(mu, flags, 0);
    if (flags & __tsan_mutex_read_lock) PushReader(mu);
  }
  void* mu;
  unsigned flags;
};

void* NotifiedFlag(const absl::Notification* n) {
  return const_cast<char*>(reinterpret_cast<const char*>(n) + sizeof(absl::Mutex));
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// ---------------------------------------------------------------- Mutex

void Mutex::Lock() {
  KVINDEX_REAL(void (*)(Mutex*), "5Mutex4LockEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  LockScope scope(this, 0);
  real(this);
}

void Mutex::ReaderLock() {
  KVINDEX_REAL(void (*)(Mutex*), "5Mutex10ReaderLockEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  LockScope scope(this, __tsan_mutex_read_lock);
  real(this);
}

bool Mutex::TryLock() {
  KVINDEX_REAL(bool (*)(Mutex*), "5Mutex7TryLockEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool locked = real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  return locked;
}

bool Mutex::ReaderTryLock() {
  KVINDEX_REAL(bool (*)(Mutex*), "5Mutex13ReaderTryLockEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  const unsigned flags = __tsan_mutex_read_lock | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(this, flags);
  const bool locked = real(this);
  __tsan_mutex_post_lock(this, flags | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  if (locked) PushReader(this);
  return locked;
}

void Mutex::Unlock() {
  KVINDEX_REAL(void (*)(Mutex*), "5Mutex6UnlockEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  __tsan_mutex_pre_unlock(this, 0);
  real(this);
  __tsan_mutex_post_unlock(this, 0);
}

void Mutex::ReaderUnlock() {
  KVINDEX_REAL(void (*)(Mutex*), "5Mutex12ReaderUnlockEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  PopReader(this);
  __tsan_mutex_pre_unlock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_unlock(this, __tsan_mutex_read_lock);
}

void Mutex::LockWhen(const Condition& cond) {
  KVINDEX_REAL(void (*)(Mutex*, const Condition&), "5Mutex8LockWhenERKNS0_9ConditionE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond);
  LockScope scope(this, 0);
  real(this, cond);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  KVINDEX_REAL(void (*)(Mutex*, const Condition&), "5Mutex14ReaderLockWhenERKNS0_9ConditionE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond);
  LockScope scope(this, __tsan_mutex_read_lock);
  real(this, cond);
}

// The *WithTimeout/*WithDeadline forms return holding the mutex either way.
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  KVINDEX_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond, timeout);
  LockScope scope(this, 0);
  return real(this, cond, timeout);
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  KVINDEX_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond, timeout);
  LockScope scope(this, __tsan_mutex_read_lock);
  return real(this, cond, timeout);
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  KVINDEX_REAL(bool (*)(Mutex*, const Condition&, Time),
               "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond, deadline);
  LockScope scope(this, 0);
  return real(this, cond, deadline);
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  KVINDEX_REAL(bool (*)(Mutex*, const Condition&, Time),
               "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond, deadline);
  LockScope scope(this, __tsan_mutex_read_lock);
  return real(this, cond, deadline);
}

void Mutex::Await(const Condition& cond) {
  KVINDEX_REAL(void (*)(Mutex*, const Condition&), "5Mutex5AwaitERKNS0_9ConditionE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond);
  RelockScope scope(this);
  real(this, cond);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  KVINDEX_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond, timeout);
  RelockScope scope(this);
  return real(this, cond, timeout);
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  KVINDEX_REAL(bool (*)(Mutex*, const Condition&, Time),
               "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, cond, deadline);
  RelockScope scope(this);
  return real(this, cond, deadline);
}

// ---------------------------------------------------------------- CondVar

void CondVar::Wait(Mutex* mu) {
  KVINDEX_REAL(void (*)(CondVar*, Mutex*), "7CondVar4WaitEPNS0_5MutexE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, mu);
  RelockScope scope(mu);
  real(this, mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  KVINDEX_REAL(bool (*)(CondVar*, Mutex*, Duration), "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE",
               false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, mu, timeout);
  RelockScope scope(mu);
  return real(this, mu, timeout);
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  KVINDEX_REAL(bool (*)(CondVar*, Mutex*, Time), "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, mu, deadline);
  RelockScope scope(mu);
  return real(this, mu, deadline);
}

// ---------------------------------------------------------------- Notification

void Notification::Notify() {
  KVINDEX_REAL(void (*)(Notification*), "12Notification6NotifyEv", false);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  __tsan_release(this);
  __tsan_release(NotifiedFlag(this));
  real(this);
}

void Notification::WaitForNotification() const {
  KVINDEX_REAL(void (*)(const Notification*), "12Notification19WaitForNotificationEv", true);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this);
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  KVINDEX_REAL(bool (*)(const Notification*, Duration), "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE",
               true);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, timeout);
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  KVINDEX_REAL(bool (*)(const Notification*, Time), "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE",
               true);
  const bool pass = Passthrough(__builtin_return_address(0));
  DepthGuard depth;  // also for passed-through calls: real ones may reach another entry point
  if (pass) return real(this, deadline);
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
