/* test_retry.c - unit tests of the retry policy (lib/retry.c). */
#include <string.h>

#include "harness.h"
#include "retry.h"

/* 2015-10-21T07:28:00Z, the instant named by the HTTP-date below. */
#define DATE_MS 1445412480000LL

static void test_defaults(void)
{
    gt_retry_policy_t p;

    gt_retry_policy_default(&p);
    TH_EQ_INT(p.max_retries, 3);
    TH_EQ_INT(p.base_ms, 100);
    TH_EQ_INT(p.max_ms, 30000);
    CU_ASSERT(p.jitter > 0.19 && p.jitter < 0.21);
}

static void test_backoff_sequence(void)
{
    gt_retry_policy_t p;

    gt_retry_policy_default(&p);
    /* rnd 0.5 is the middle of the jitter band: no offset. */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 1, -1, 0.5), 100);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 2, -1, 0.5), 200);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 3, -1, 0.5), 400);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 4, -1, 0.5), 800);
    /* A retry number below 1 is treated as the first. */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 0, -1, 0.5), 100);
}

static void test_backoff_jitter_bounds(void)
{
    gt_retry_policy_t p;

    gt_retry_policy_default(&p);
    /* jitter 0.2 spreads over +-10%. */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 1, -1, 0.0), 90);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 4, -1, 0.0), 720);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 1, -1, 0.999999), 110);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 4, -1, 0.999999), 880);
    for (int i = 0; i < 100; i++) {
        double rnd = i / 100.0;
        int64_t d = gt_retry_backoff_ms(&p, 3, -1, rnd);
        CU_ASSERT(d >= 360 && d <= 440);
    }
    p.jitter = 0;
    TH_EQ_INT(gt_retry_backoff_ms(&p, 2, -1, 0.0), 200);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 2, -1, 0.99), 200);
}

static void test_backoff_cap(void)
{
    gt_retry_policy_t p;

    gt_retry_policy_default(&p);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 20, -1, 0.5), 30000);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 20, -1, 0.999), 30000);
    /* Huge retry numbers must not overflow. */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 1000, -1, 0.5), 30000);
    p.max_ms = 250;
    TH_EQ_INT(gt_retry_backoff_ms(&p, 2, -1, 0.5), 200);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 3, -1, 0.5), 250);
}

static void test_backoff_retry_after(void)
{
    gt_retry_policy_t p;

    gt_retry_policy_default(&p);
    /* Retry-After raises the delay ... */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 1, 3000, 0.5), 3000);
    /* ... never lowers it ... */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 4, 0, 0.5), 800);
    TH_EQ_INT(gt_retry_backoff_ms(&p, 4, 500, 0.5), 800);
    /* ... and is capped too. */
    TH_EQ_INT(gt_retry_backoff_ms(&p, 1, 120000, 0.5), 30000);
}

static void test_retry_after_parse(void)
{
    TH_EQ_INT(gt_retry_after_parse("3", DATE_MS), 3000);
    TH_EQ_INT(gt_retry_after_parse("  7 ", DATE_MS), 7000);
    TH_EQ_INT(gt_retry_after_parse("0", DATE_MS), 0);
    TH_EQ_INT(gt_retry_after_parse("120\r\n", DATE_MS), 120000);
    TH_EQ_INT(gt_retry_after_parse(NULL, DATE_MS), -1);
    TH_EQ_INT(gt_retry_after_parse("", DATE_MS), -1);
    TH_EQ_INT(gt_retry_after_parse("   ", DATE_MS), -1);
    TH_EQ_INT(gt_retry_after_parse("garbage", DATE_MS), -1);
    TH_EQ_INT(gt_retry_after_parse("3s", DATE_MS), -1);
    TH_EQ_INT(gt_retry_after_parse("-5", DATE_MS), -1);
    TH_EQ_INT(gt_retry_after_parse("1.5", DATE_MS), -1);
    /* Absurd values are clamped rather than overflowing. */
    CU_ASSERT(gt_retry_after_parse("99999999999999999999999", DATE_MS) > 0);

    /* IMF-fixdate, 10 s after "now". */
    TH_EQ_INT(gt_retry_after_parse("Wed, 21 Oct 2015 07:28:10 GMT", DATE_MS), 10000);
    TH_EQ_INT(gt_retry_after_parse(" Wed, 21 Oct 2015 07:28:10 GMT ", DATE_MS), 10000);
    /* Obsolete RFC 850 and asctime forms. */
    TH_EQ_INT(gt_retry_after_parse("Wednesday, 21-Oct-15 07:28:05 GMT", DATE_MS), 5000);
    TH_EQ_INT(gt_retry_after_parse("Wed Oct 21 07:28:02 2015", DATE_MS), 2000);
    /* A date in the past means "now". */
    TH_EQ_INT(gt_retry_after_parse("Wed, 21 Oct 2015 07:00:00 GMT", DATE_MS), 0);
}

static void test_retryable_statuses(void)
{
    static const long yes[] = {0, 408, 429, 500, 502, 503, 504, 599};
    static const long no[] = {200, 201, 204, 301, 400, 401, 403, 404, 409, 422, 600};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!gt_retry_is_retryable(yes[i]))
            fprintf(stderr, "  status %ld should be retryable\n", yes[i]);
        CU_ASSERT(gt_retry_is_retryable(yes[i]));
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        if (gt_retry_is_retryable(no[i]))
            fprintf(stderr, "  status %ld should not be retryable\n", no[i]);
        CU_ASSERT(!gt_retry_is_retryable(no[i]));
    }
}

int main(void)
{
    static const th_test_t tests[] = {
        {"defaults", test_defaults},
        {"backoff_sequence", test_backoff_sequence},
        {"backoff_jitter_bounds", test_backoff_jitter_bounds},
        {"backoff_cap", test_backoff_cap},
        {"backoff_retry_after", test_backoff_retry_after},
        {"retry_after_parse", test_retry_after_parse},
        {"retryable_statuses", test_retryable_statuses},
        {NULL, NULL},
    };
    return th_run("retry", tests);
}
