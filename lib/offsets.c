/* offsets.c - per-partition commit tracking: a ring of tracked offsets whose
 * done prefix is popped as it forms. */
#include "offsets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define GT_OFFSETS_MIN_CAP 64

/* The ring holds the tracked offsets from the lowest not-done one (head)
 * to the last tracked, in increasing order; done[] flags the completed ones
 * behind the head. The head itself is never done: done() pops the prefix. */
struct gt_offsets {
    int64_t *off;
    unsigned char *done;
    size_t cap;     /* power of two, or 0 before the first track */
    size_t head;    /* index of the lowest entry */
    size_t count;   /* entries in the ring */
    size_t pending; /* entries not done */
    int64_t last;   /* last tracked offset, -1 if none */
    int64_t committed;
};

static int offsets_grow(gt_offsets_t *o);
static long offsets_find(const gt_offsets_t *o, int64_t offset);

gt_offsets_t *gt_offsets_new(void)
{
    gt_offsets_t *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->last = -1;
    o->committed = -1;
    return o;
}

void gt_offsets_free(gt_offsets_t *o)
{
    if (!o)
        return;
    free(o->off);
    free(o->done);
    free(o);
}

/* Doubles the ring, unrolling it so that head is at index 0. */
static int offsets_grow(gt_offsets_t *o)
{
    size_t ncap = o->cap ? o->cap * 2 : GT_OFFSETS_MIN_CAP;
    int64_t *noff = malloc(ncap * sizeof(*noff));
    unsigned char *ndone = malloc(ncap);
    if (!noff || !ndone) {
        free(noff);
        free(ndone);
        return -ENOMEM;
    }
    for (size_t i = 0; i < o->count; i++) {
        size_t j = (o->head + i) & (o->cap - 1);
        noff[i] = o->off[j];
        ndone[i] = o->done[j];
    }
    free(o->off);
    free(o->done);
    o->off = noff;
    o->done = ndone;
    o->cap = ncap;
    o->head = 0;
    return 0;
}

int gt_offsets_track(gt_offsets_t *o, int64_t offset)
{
    if (offset < 0 || offset <= o->last)
        return -EINVAL;
    if (o->count == o->cap && offsets_grow(o) < 0)
        return -ENOMEM;
    size_t i = (o->head + o->count) & (o->cap - 1);
    o->off[i] = offset;
    o->done[i] = 0;
    o->count++;
    o->pending++;
    o->last = offset;
    return 0;
}

/* Ring position (0 = head) of offset, or -1. Offsets are usually contiguous,
 * so the direct guess hits; gaps fall back to a binary search. */
static long offsets_find(const gt_offsets_t *o, int64_t offset)
{
    if (o->count == 0)
        return -1;
    int64_t first = o->off[o->head];
    if (offset < first || offset > o->last)
        return -1;
    size_t guess = (size_t)(offset - first);
    if (guess < o->count && o->off[(o->head + guess) & (o->cap - 1)] == offset)
        return (long)guess;
    size_t lo = 0, hi = o->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t v = o->off[(o->head + mid) & (o->cap - 1)];
        if (v == offset)
            return (long)mid;
        if (v < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int gt_offsets_done(gt_offsets_t *o, int64_t offset)
{
    long pos = offsets_find(o, offset);
    if (pos < 0)
        return -ENOENT;
    size_t i = (o->head + (size_t)pos) & (o->cap - 1);
    if (o->done[i])
        return -ENOENT;
    o->done[i] = 1;
    o->pending--;
    /* Each entry is popped once: amortised O(1). */
    while (o->count > 0 && o->done[o->head]) {
        o->head = (o->head + 1) & (o->cap - 1);
        o->count--;
    }
    return 0;
}

int64_t gt_offsets_committable(const gt_offsets_t *o)
{
    if (o->last < 0)
        return -1;
    int64_t next = o->count > 0 ? o->off[o->head] : o->last + 1;
    return next <= o->committed ? -1 : next;
}

void gt_offsets_mark_committed(gt_offsets_t *o, int64_t offset)
{
    o->committed = offset;
}

int64_t gt_offsets_committed(const gt_offsets_t *o)
{
    return o->committed;
}

size_t gt_offsets_pending(const gt_offsets_t *o)
{
    return o->pending;
}
