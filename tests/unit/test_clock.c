/* test_clock.c - RFC 3339 formatting and parsing. */
#include <string.h>

#include "clock.h"
#include "harness.h"

static void test_roundtrip(void)
{
    char buf[40];
    int64_t ms = 1795000000123LL, back = 0;
    gt_clock_fmt(ms, buf, sizeof(buf));
    CU_ASSERT_EQUAL(gt_clock_parse(buf, &back), 0);
    TH_EQ_INT(back, ms);
}

static void test_known_values(void)
{
    int64_t ms = 0;
    CU_ASSERT_EQUAL(gt_clock_parse("1970-01-01T00:00:00Z", &ms), 0);
    TH_EQ_INT(ms, 0);
    CU_ASSERT_EQUAL(gt_clock_parse("2026-11-22T10:00:00.5+01:00", &ms), 0);
    TH_EQ_INT(ms, 1795338000500LL);
    CU_ASSERT_EQUAL(gt_clock_parse("2000-02-29T23:59:59.999Z", &ms), 0);
    TH_EQ_INT(ms, 951868799999LL);
}

static void test_rejects(void)
{
    int64_t ms;
    const char *bad[] = {"",
                         "2026-11-22",
                         "2026-11-22T10:00:00",
                         "2026-13-01T00:00:00Z",
                         "2026-11-22T10:00:00.Z",
                         "2026-11-22T10:00:00Zjunk",
                         "tomorrow",
                         NULL};
    for (int i = 0; bad[i]; i++)
        CU_ASSERT_EQUAL(gt_clock_parse(bad[i], &ms), -1);
}

int main(void)
{
    static const th_test_t tests[] = {{"roundtrip", test_roundtrip},
                                      {"known values", test_known_values},
                                      {"rejects malformed", test_rejects},
                                      {NULL, NULL}};
    return th_run("clock", tests);
}
