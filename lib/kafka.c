/* kafka.c - placeholder until implemented. */
typedef int gt_placeholder_kafka_t;
