# llm_add_test(NAME LIBS...): tests/unit/test_NAME.c exports `Suite *NAME_suite(void)`;
# run_suite.c supplies main(). One executable and one ctest entry per module.
function(llm_add_test name)
    add_executable(test_${name} ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_${name}.c
        ${CMAKE_CURRENT_SOURCE_DIR}/unit/run_suite.c)
    target_compile_definitions(test_${name} PRIVATE LLM_SUITE_FN=${name}_suite)
    target_link_libraries(test_${name} PRIVATE ${ARGN} PkgConfig::CHECK llm_build_flags)
    add_test(NAME unit_${name} COMMAND test_${name})
    set_tests_properties(unit_${name} PROPERTIES TIMEOUT 300
        ENVIRONMENT "LLM_SOURCE_DIR=${PROJECT_SOURCE_DIR};LLM_BUILD_DIR=${PROJECT_BINARY_DIR}")
endfunction()
