#pragma once

// kSanitized: true in an AddressSanitizer or ThreadSanitizer build, where
// processes run 5-20x slower and RSS includes shadow memory: tests that
// measure memory or run at scale size themselves down there.

namespace kvindex::testutil {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace kvindex::testutil
