/* retry.c - placeholder until implemented. */
typedef int gt_placeholder_retry_t;
