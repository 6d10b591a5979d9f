# Build options. Every target links llm_build_flags PRIVATE, which carries C11 and the
# warning policy; sanitizers are a configuration, not a separate code path.
option(LLM_TESTS "Build the tests" ON)
option(LLM_ENABLE_CUDA "Build kernels/cuda when a CUDA toolkit is found" OFF)
option(LLM_SANITIZE "Build with AddressSanitizer + UndefinedBehaviorSanitizer" OFF)
option(LLM_FUZZ "Build libFuzzer targets too (needs clang; with LLM_SANITIZE)" OFF)

add_library(llm_build_flags INTERFACE)
target_compile_features(llm_build_flags INTERFACE c_std_11)
target_compile_options(llm_build_flags INTERFACE -Wall -Wextra -Werror -Wshadow
    -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter)
target_compile_definitions(llm_build_flags INTERFACE _POSIX_C_SOURCE=200809L)

if(LLM_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
        -fno-omit-frame-pointer)
    add_link_options(-fsanitize=address,undefined)
endif()

if(LLM_FUZZ)
    if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
        message(FATAL_ERROR "LLM_FUZZ needs clang (CC=clang)")
    endif()
    # Every library gets coverage instrumentation; only the fuzz executables link the
    # libFuzzer main.
    add_compile_options(-fsanitize=fuzzer-no-link)
endif()
