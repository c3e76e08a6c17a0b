/* test_offsets.c - unit tests of the per-partition commit tracker (lib/offsets). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "offsets.h"

static void test_empty(void)
{
    gt_offsets_t *o = gt_offsets_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    TH_EQ_INT(gt_offsets_committable(o), -1);
    TH_EQ_INT(gt_offsets_pending(o), 0);
    TH_EQ_INT(gt_offsets_done(o, 0), -ENOENT);
    TH_EQ_INT(gt_offsets_committed(o), -1);
    gt_offsets_free(o);
    gt_offsets_free(NULL);
}

static void test_in_order(void)
{
    gt_offsets_t *o = gt_offsets_new();
    for (int64_t i = 10; i < 20; i++)
        TH_EQ_INT(gt_offsets_track(o, i), 0);
    TH_EQ_INT(gt_offsets_pending(o), 10);
    /* Nothing done: the first tracked offset is where a restart resumes. */
    TH_EQ_INT(gt_offsets_committable(o), 10);
    for (int64_t i = 10; i < 20; i++) {
        TH_EQ_INT(gt_offsets_done(o, i), 0);
        TH_EQ_INT(gt_offsets_committable(o), i + 1);
    }
    TH_EQ_INT(gt_offsets_pending(o), 0);
    gt_offsets_free(o);
}

static void test_out_of_order(void)
{
    gt_offsets_t *o = gt_offsets_new();
    for (int64_t i = 0; i < 5; i++)
        gt_offsets_track(o, i);
    TH_EQ_INT(gt_offsets_done(o, 3), 0);
    TH_EQ_INT(gt_offsets_done(o, 1), 0);
    TH_EQ_INT(gt_offsets_committable(o), 0);
    TH_EQ_INT(gt_offsets_done(o, 0), 0);
    TH_EQ_INT(gt_offsets_committable(o), 2);
    TH_EQ_INT(gt_offsets_done(o, 2), 0);
    TH_EQ_INT(gt_offsets_committable(o), 4);
    TH_EQ_INT(gt_offsets_pending(o), 1);
    TH_EQ_INT(gt_offsets_done(o, 4), 0);
    TH_EQ_INT(gt_offsets_committable(o), 5);
    TH_EQ_INT(gt_offsets_pending(o), 0);
    gt_offsets_free(o);
}

static void test_commit_marks(void)
{
    gt_offsets_t *o = gt_offsets_new();
    gt_offsets_track(o, 0);
    gt_offsets_track(o, 1);
    gt_offsets_done(o, 0);
    TH_EQ_INT(gt_offsets_committable(o), 1);
    gt_offsets_mark_committed(o, 1);
    TH_EQ_INT(gt_offsets_committed(o), 1);
    TH_EQ_INT(gt_offsets_committable(o), -1); /* nothing new */
    gt_offsets_track(o, 2);
    TH_EQ_INT(gt_offsets_committable(o), -1); /* still blocked on 1 */
    gt_offsets_done(o, 2);
    TH_EQ_INT(gt_offsets_committable(o), -1);
    gt_offsets_done(o, 1);
    TH_EQ_INT(gt_offsets_committable(o), 3);
    /* A failed commit is forgotten and offered again. */
    gt_offsets_mark_committed(o, 3);
    TH_EQ_INT(gt_offsets_committable(o), -1);
    gt_offsets_mark_committed(o, -1);
    TH_EQ_INT(gt_offsets_committable(o), 3);
    gt_offsets_free(o);
}

static void test_errors(void)
{
    gt_offsets_t *o = gt_offsets_new();
    TH_EQ_INT(gt_offsets_track(o, -1), -EINVAL);
    TH_EQ_INT(gt_offsets_track(o, 5), 0);
    TH_EQ_INT(gt_offsets_track(o, 5), -EINVAL);
    TH_EQ_INT(gt_offsets_track(o, 4), -EINVAL);
    TH_EQ_INT(gt_offsets_done(o, 4), -ENOENT);
    TH_EQ_INT(gt_offsets_done(o, 6), -ENOENT);
    TH_EQ_INT(gt_offsets_done(o, 5), 0);
    TH_EQ_INT(gt_offsets_done(o, 5), -ENOENT); /* twice */
    TH_EQ_INT(gt_offsets_pending(o), 0);
    TH_EQ_INT(gt_offsets_track(o, 5), -EINVAL); /* still not greater than last */
    gt_offsets_free(o);
}

static void test_gaps(void)
{
    /* Compacted topics and transaction markers leave holes in offsets. */
    gt_offsets_t *o = gt_offsets_new();
    int64_t offs[] = {3, 4, 9, 10, 11, 20, 40};
    size_t n = sizeof(offs) / sizeof(offs[0]);
    for (size_t i = 0; i < n; i++)
        TH_EQ_INT(gt_offsets_track(o, offs[i]), 0);
    TH_EQ_INT(gt_offsets_done(o, 5), -ENOENT);
    TH_EQ_INT(gt_offsets_done(o, 10), 0);
    TH_EQ_INT(gt_offsets_done(o, 40), 0);
    TH_EQ_INT(gt_offsets_done(o, 3), 0);
    TH_EQ_INT(gt_offsets_committable(o), 4);
    TH_EQ_INT(gt_offsets_done(o, 4), 0);
    TH_EQ_INT(gt_offsets_committable(o), 9);
    TH_EQ_INT(gt_offsets_done(o, 9), 0);
    TH_EQ_INT(gt_offsets_committable(o), 11);
    TH_EQ_INT(gt_offsets_done(o, 11), 0);
    TH_EQ_INT(gt_offsets_done(o, 20), 0);
    TH_EQ_INT(gt_offsets_committable(o), 41);
    gt_offsets_free(o);
}

/* Many offsets, done in a shuffled order with a window of in-flight
 * messages, across ring growth and wrap-around; checked against a model. */
static void test_randomised(void)
{
    enum { N = 200000, WINDOW = 1000 };
    gt_offsets_t *o = gt_offsets_new();
    unsigned char *done = calloc(N, 1);
    int64_t *inflight = malloc(WINDOW * sizeof(*inflight));
    size_t n_inflight = 0;
    int64_t next = 0, low = 0, committed = -1;
    unsigned seed = 12345;
    int bad = 0;
    while (low < N) {
        while (next < N && n_inflight < WINDOW) {
            if (gt_offsets_track(o, next) != 0)
                bad++;
            inflight[n_inflight++] = next++;
        }
        seed = seed * 1103515245u + 12345u;
        size_t k = (seed >> 8) % n_inflight;
        int64_t off = inflight[k];
        inflight[k] = inflight[--n_inflight];
        if (gt_offsets_done(o, off) != 0)
            bad++;
        done[off] = 1;
        while (low < N && done[low])
            low++;
        int64_t want = low < next ? low : next;
        if (gt_offsets_committable(o) != (want <= committed ? -1 : want))
            bad++;
        if (gt_offsets_pending(o) != n_inflight)
            bad++;
        if ((seed >> 4) % 97 == 0) {
            gt_offsets_mark_committed(o, want);
            committed = want;
        }
    }
    TH_EQ_INT(bad, 0);
    TH_EQ_INT(gt_offsets_pending(o), 0);
    free(done);
    free(inflight);
    gt_offsets_free(o);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"empty", test_empty},
        {"in_order", test_in_order},
        {"out_of_order", test_out_of_order},
        {"commit_marks", test_commit_marks},
        {"errors", test_errors},
        {"gaps", test_gaps},
        {"randomised", test_randomised},
        {NULL, NULL},
    };
    return th_run("offsets", tests);
}
