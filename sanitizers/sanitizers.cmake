# Sanitizer and fuzzing support, included by the top-level CMakeLists.txt after
# the packages are found and before any target is defined.
#
#   -DKVINDEX_SANITIZE=address  ASan + UBSan (scripts/test --asan, build-asan/)
#   -DKVINDEX_SANITIZE=thread   TSan         (scripts/test --tsan, build-tsan/)
#   -DKVINDEX_FUZZ=ON           clang libFuzzer targets only (scripts/fuzz, build-fuzz/)
#
# Every executable of a sanitizer build links kvindex_sanitizer_support:
# default runtime options and suppression files (sanitizer_defaults.cc) and,
# for TSan, the absl::Mutex annotations (absl_tsan_annotations.cc).

if(KVINDEX_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "KVINDEX_FUZZ needs clang (CXX=clang++); libFuzzer is clang's")
  endif()
  # Coverage instrumentation everywhere; the fuzzer main only in the fuzz targets.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(KVINDEX_SANITIZE STREQUAL "thread" OR KVINDEX_SANITIZE STREQUAL "address")
  add_library(kvindex_sanitizer_support OBJECT ${CMAKE_CURRENT_LIST_DIR}/sanitizer_defaults.cc)
  target_compile_definitions(kvindex_sanitizer_support PRIVATE
    KVINDEX_TSAN_SUPP="${CMAKE_CURRENT_LIST_DIR}/tsan.supp"
    KVINDEX_LSAN_SUPP="${CMAKE_CURRENT_LIST_DIR}/lsan.supp")
  if(KVINDEX_SANITIZE STREQUAL "thread")
    # GCC warns that TSan does not model std::atomic_thread_fence; the only fence
    # reached is absl::GetFlag's SequenceLock for 16-byte flags (absl::Duration),
    # whose flags are written before any thread reads them.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      add_compile_options(-Wno-tsan)
    endif()
    # MapFieldBase's layout as Debian's uninstrumented libprotobuf has it.
    add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:SHELL:-include ${CMAKE_CURRENT_LIST_DIR}/protobuf_tsan_layout.h>")
    target_sources(kvindex_sanitizer_support PRIVATE ${CMAKE_CURRENT_LIST_DIR}/absl_tsan_annotations.cc)
    target_compile_definitions(kvindex_sanitizer_support PRIVATE KVINDEX_SANITIZE_THREAD)
    target_link_libraries(kvindex_sanitizer_support PUBLIC absl::synchronization absl::time ${CMAKE_DL_LIBS})
  else()
    target_compile_definitions(kvindex_sanitizer_support PRIVATE KVINDEX_SANITIZE_ADDRESS)
  endif()
  # Every target defined from here on links the support objects.
  link_libraries(kvindex_sanitizer_support)
endif()
