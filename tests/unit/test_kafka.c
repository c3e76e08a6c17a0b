/* test_kafka.c - placeholder. */
#include "harness.h"
int main(void) { static const th_test_t t[] = {{NULL, NULL}}; return th_run("kafka", t); }
