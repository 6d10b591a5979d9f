# Build options. Every target links llm_build_flags PRIVATE, which carries C11 and the
# warning policy; sanitizers are a configuration, not a separate code path.
option(LLM_TESTS "Build the tests" ON)
option(LLM_ENABLE_CUDA "Build kernels/cuda when a CUDA toolkit is found" OFF)
option(LLM_SANITIZE "Build with AddressSanitizer + UndefinedBehaviorSanitizer" OFF)

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
