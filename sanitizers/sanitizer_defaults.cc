// Default options of the sanitizer runtimes, compiled into every executable of
// a sanitizer build (see sanitizers.cmake), so that tests, kvindex-server and
// the tools behave the same whether ctest, a test or a person starts them.
// Variables in the environment (TSAN_OPTIONS, ASAN_OPTIONS, ...) still win.
//
// KVINDEX_TSAN_SUPP / KVINDEX_LSAN_SUPP are the absolute paths of the checked-in
// suppression files (sanitizers/tsan.supp, sanitizers/lsan.supp).

extern "C" {

#if defined(KVINDEX_SANITIZE_THREAD)
// ignore_noninstrumented_modules: the memory accesses that intercepted libc
// calls (memcpy, malloc/free, recv, socket, ...) make on behalf of code that is
// not compiled with -fsanitize=thread (libstdc++, gRPC, protobuf, ZeroMQ,
// Abseil, spdlog from Debian) are not recorded. Their own loads and stores are
// invisible to TSan anyway, and so is the synchronisation inside them
// (lock-free queues, futexes), so recording only their libc calls produces
// races between a library's threads that are not races. Every access made by
// our instrumented code is still checked, and pthread synchronisation is still
// modelled wherever it is called from. See tsan.supp for the rest.
// second_deadlock_stack: lock-order reports show both acquisitions.
const char* __tsan_default_options() {
  return "suppressions=" KVINDEX_TSAN_SUPP " ignore_noninstrumented_modules=1 second_deadlock_stack=1 history_size=4";
}
#endif

#if defined(KVINDEX_SANITIZE_ADDRESS)
// detect_stack_use_after_return costs too much for the process tests' timeouts.
const char* __asan_default_options() { return "detect_leaks=1:strict_string_checks=1:check_initialization_order=1"; }
const char* __lsan_default_options() { return "suppressions=" KVINDEX_LSAN_SUPP; }
const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }
#endif

}  // extern "C"
