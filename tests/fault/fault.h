/* fault.h - the fault suite's shared pieces: a run of loadgen requests on a
 * th_cluster and the invariants every fault case ends with. */
#ifndef GT_FAULT_H
#define GT_FAULT_H

#include <jansson.h>

#include "cluster.h"

typedef struct th_fault_expect {
    json_t *request_ids;  /* the request_ids submitted (array of strings) */
    int max_usage_events; /* per task on gantry.usage: 1 when no process was killed; 0: any */
    int timeout_ms;       /* deadline of each wait below; 0: 120000 */
} th_fault_expect_t;

/* Writes `gantry-loadgen --count n --seed seed` to logdir/name and returns
 * its request_ids (NULL on failure, printed). Caller owns them. */
json_t *th_fault_requests(th_cluster_t *c, const char *name, int n, int seed, char *path,
                          size_t len);

/* request_ids of a JSONL file of requests (NULL when unreadable). */
json_t *th_fault_ids_of(const char *path);

/* gantry.results parsed, by request_id: {id: [result, ...]}. Caller owns it. */
json_t *th_fault_results(th_cluster_t *c);

/* gantry.dlq: [{"bytes": size of the message, "entry": parsed or null}].
 * Caller owns it. */
json_t *th_fault_dlq(th_cluster_t *c);

/* Waits until every request in ids has a result on gantry.results (the
 * cheap end offsets first, the topic read only once they suffice). Returns 1,
 * or 0 on timeout after printing how many are missing. */
int th_fault_wait_results(th_cluster_t *c, json_t *ids, int timeout_ms);

/* The invariants, each asserted (CUnit, not fatal) and printed when broken:
 *  1. every request has exactly one result on gantry.results (by request_id
 *     in the value), none has two;
 *  2. usage billed once per succeeded task, on gantry.usage and in
 *     PostgreSQL (th_check_usage, waited for the ledger);
 *  3. zero allocations outstanding at the mock HostedAI (waited for the
 *     lease reaper);
 *  4. the committed offset of every partition of every input topic at its
 *     end, for the group that reads it (gantry-dispatcher: requests and
 *     task-results; gantry-worker: the lanes' task topics; gantry-ledger:
 *     usage).
 * Returns the number of invariants broken (0: all hold). */
int th_fault_check(th_cluster_t *c, const th_fault_expect_t *e);

/* Produces value to topic with a client whose message.max.bytes allows
 * max_bytes, and waits for the broker's acknowledgement. Returns 0, or -1
 * with librdkafka's reason printed. */
int th_fault_produce(th_cluster_t *c, const char *topic, const char *key, const char *value,
                     size_t len, long max_bytes);

/* Publishes a JSONL file with `gantry submit` under the cluster's
 * configuration less kafka.producer_properties (a case may starve the
 * services' producers; the test's own must not be). Returns 0 or -1. */
int th_fault_submit(th_cluster_t *c, const char *path);

/* Runs one SQL command (any result status but an error). Returns 0, or -1
 * with the error printed. */
int th_fault_sql(const char *conninfo, const char *sql);

/* Keeps a fault in place for ms: the fault's duration, not a wait for a
 * condition. */
void th_fault_hold(int ms);

/* A private PostgreSQL (tests/pg.sh) in a new directory, its address put in
 * GANTRY_TEST_PGHOST/PORT for th_cluster_start: a case that stops the server
 * stops only its own. pg_ctl(dir, "start"|"stop") restarts it on the same
 * port. Return 0 or -1. */
int th_fault_pg_private(char *dir, size_t len);
int th_fault_pg_ctl(const char *dir, const char *cmd);

#endif
