/*
 * run_suite.c - main() for every unit test executable: runs the one suite named by the
 * LLM_SUITE_FN compile definition, in CK_FORK mode so a crash fails one test only.
 */
#include <check.h>
#include <stdlib.h>

Suite *LLM_SUITE_FN(void);

int
main(void)
{
    SRunner *sr = srunner_create(LLM_SUITE_FN());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
