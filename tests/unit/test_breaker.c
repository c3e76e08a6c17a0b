/* test_breaker.c - circuit breaker: opens after N consecutive failures, half-opens
 * after the recovery time with a single trial, closes on its success. */
#include <string.h>

#include "breaker.h"
#include "harness.h"

static void test_opens_after_consecutive_failures(void)
{
    gt_breaker_t b;
    int ch;
    gt_breaker_init(&b, 3, 1000);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT(gt_breaker_allow(&b, 0, &ch));
        gt_breaker_failure(&b, 0, 0, &ch);
        TH_EQ_INT(ch, -1);
    }
    /* A success in between resets the count: failures must be consecutive. */
    CU_ASSERT(gt_breaker_allow(&b, 0, &ch));
    gt_breaker_success(&b, 0, &ch);
    TH_EQ_INT(ch, -1);
    for (int i = 0; i < 2; i++)
        gt_breaker_failure(&b, 10, 10, &ch);
    TH_EQ_INT(b.state, GT_BREAKER_CLOSED);
    gt_breaker_failure(&b, 10, 10, &ch);
    TH_EQ_INT(ch, GT_BREAKER_OPEN);
    TH_EQ_INT(gt_breaker_allow(&b, 500, &ch), 0);
    TH_EQ_INT(ch, -1);
    TH_EQ_INT(gt_breaker_peek(&b, 500), GT_BREAKER_OPEN);
    TH_EQ_STR(gt_breaker_state_name(GT_BREAKER_OPEN), "open");
}

static void test_half_open_single_trial(void)
{
    gt_breaker_t b;
    int ch;
    gt_breaker_init(&b, 1, 1000);
    gt_breaker_failure(&b, 0, 0, &ch);
    TH_EQ_INT(ch, GT_BREAKER_OPEN);
    TH_EQ_INT(gt_breaker_peek(&b, 1000), GT_BREAKER_HALF_OPEN);
    /* The first caller after the recovery time gets the trial... */
    TH_EQ_INT(gt_breaker_allow(&b, 1000, &ch), 1);
    TH_EQ_INT(ch, GT_BREAKER_HALF_OPEN);
    /* ...and nobody else while it is out. */
    TH_EQ_INT(gt_breaker_allow(&b, 1001, &ch), 0);
    TH_EQ_INT(gt_breaker_allow(&b, 5000, &ch), 0);
    /* The trial fails: open again for a whole recovery period. */
    gt_breaker_failure(&b, 1200, 1200, &ch);
    TH_EQ_INT(ch, GT_BREAKER_OPEN);
    TH_EQ_INT(gt_breaker_allow(&b, 2100, &ch), 0);
    TH_EQ_INT(gt_breaker_allow(&b, 2200, &ch), 1);
    TH_EQ_INT(ch, GT_BREAKER_HALF_OPEN);
    /* A cancelled trial is given back. */
    gt_breaker_cancel(&b);
    TH_EQ_INT(gt_breaker_allow(&b, 2201, &ch), 1);
    TH_EQ_INT(ch, -1);
    gt_breaker_success(&b, 2300, &ch);
    TH_EQ_INT(ch, GT_BREAKER_CLOSED);
    TH_EQ_INT(gt_breaker_allow(&b, 2301, &ch), 1);
    TH_EQ_INT(gt_breaker_allow(&b, 2301, &ch), 1);
    TH_EQ_STR(gt_breaker_state_name(b.state), "closed");
}

static void test_late_outcomes_while_open(void)
{
    gt_breaker_t b;
    int ch;
    gt_breaker_init(&b, 2, 100);
    /* Three calls allowed while closed; two fail and open it. */
    gt_breaker_failure(&b, 0, 0, &ch);
    gt_breaker_failure(&b, 0, 0, &ch);
    TH_EQ_INT(ch, GT_BREAKER_OPEN);
    /* The third one's late success or failure changes nothing. */
    gt_breaker_success(&b, 5, &ch);
    TH_EQ_INT(ch, -1);
    TH_EQ_INT(b.state, GT_BREAKER_OPEN);
    gt_breaker_failure(&b, 50, 50, &ch);
    TH_EQ_INT(ch, -1);
    TH_EQ_INT(b.opened_at, 0); /* recovery still counts from the opening */
    TH_EQ_INT(gt_breaker_allow(&b, 100, &ch), 1);
    /* Defaults are sane for a zero threshold. */
    gt_breaker_init(&b, 0, 10);
    TH_EQ_INT(b.threshold, 1);
}

/* 64 calls started together (t=0), the fast errors among them answered
 * first: that is one piece of news, not 64; the pool opens only once calls
 * started after a failure was known fail too, threshold times in a row. */
static void test_burst_counts_once(void)
{
    gt_breaker_t b;
    int ch;
    gt_breaker_init(&b, 5, 1000);
    for (int i = 0; i < 8; i++)
        gt_breaker_failure(&b, 2 + i, 0, &ch);
    TH_EQ_STR(gt_breaker_state_name(b.state), "closed");
    TH_EQ_INT(b.failures, 1);
    /* Retries, each started after the previous failure was reported. */
    for (int i = 0; i < 3; i++)
        gt_breaker_failure(&b, 100 * (i + 1) + 10, 100 * (i + 1), &ch);
    TH_EQ_STR(gt_breaker_state_name(b.state), "closed");
    gt_breaker_failure(&b, 410, 400, &ch);
    TH_EQ_INT(ch, GT_BREAKER_OPEN);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"opens after N consecutive failures", test_opens_after_consecutive_failures},
        {"half-open lets one trial through", test_half_open_single_trial},
        {"late outcomes while open", test_late_outcomes_while_open},
        {"a burst of concurrent failures counts once", test_burst_counts_once},
        {NULL, NULL},
    };
    return th_run("breaker", tests);
}
