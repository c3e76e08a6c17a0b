/* offsets.h - per-partition commit tracking: which offset is safe to commit
 * when messages complete out of order. Pure data structure, no Kafka calls.
 *
 * Offsets of one partition are tracked in increasing order (gaps allowed, as
 * after compaction or transaction markers) and marked done in any order. The
 * committable offset is the lowest tracked offset not yet done, or the last
 * tracked offset + 1 when every tracked offset is done: Kafka's "next offset
 * to read" convention. Every operation is amortised O(1). Not thread safe. */
#ifndef GT_OFFSETS_H
#define GT_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

typedef struct gt_offsets gt_offsets_t;

/* Returns an empty tracker, or NULL on out of memory. */
gt_offsets_t *gt_offsets_new(void);
/* Frees o; NULL is allowed. */
void gt_offsets_free(gt_offsets_t *o);

/* Starts tracking offset (a message handed out, not yet done). Returns 0,
 * -EINVAL when offset is negative or not greater than the last tracked
 * offset (the tracker is unchanged), -ENOMEM on out of memory (unchanged). */
int gt_offsets_track(gt_offsets_t *o, int64_t offset);

/* Marks a tracked offset done. Returns 0, or -ENOENT when offset is not
 * tracked or already done (the tracker is unchanged). */
int gt_offsets_done(gt_offsets_t *o, int64_t offset);

/* The offset to commit now, or -1 when it would not advance past the last
 * offset passed to gt_offsets_mark_committed (or nothing was tracked yet).
 * Can't fail. */
int64_t gt_offsets_committable(const gt_offsets_t *o);

/* Records that offset was committed (normally the value just returned by
 * gt_offsets_committable). Pass -1 to forget it, e.g. after a failed commit,
 * so that the next gt_offsets_committable returns the offset again. */
void gt_offsets_mark_committed(gt_offsets_t *o, int64_t offset);

/* The last committed offset recorded, or -1. */
int64_t gt_offsets_committed(const gt_offsets_t *o);

/* Number of tracked offsets not yet done. */
size_t gt_offsets_pending(const gt_offsets_t *o);

#endif
