/* pg.c - placeholder until implemented. */
typedef int gt_placeholder_pg_t;
