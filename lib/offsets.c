/* offsets.c - placeholder until implemented. */
typedef int gt_placeholder_offsets_t;
