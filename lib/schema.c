/* schema.c - placeholder until implemented. */
typedef int gt_placeholder_schema_t;
