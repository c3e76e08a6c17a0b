/* fault.c - the fault suite's shared pieces: loadgen runs and the invariants
 * every fault case ends with (one result, billed once, nothing leaked, nothing
 * stuck). */
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fault.h"

#define DEFAULT_TIMEOUT_MS 120000
/* Once one wait has run out, the rest get this much: a case that already
 * failed ends in seconds, not in four full timeouts. */
#define AFTER_FAILURE_MS 15000

static const struct {
    const char *group, *topic;
} inputs[] = {
    {"gantry-dispatcher", "gantry.requests"}, {"gantry-dispatcher", "gantry.task-results"},
    {"gantry-worker", "gantry.tasks.small"},  {"gantry-worker", "gantry.tasks.large"},
    {"gantry-ledger", "gantry.usage"},
};

json_t *th_fault_ids_of(const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    json_t *ids;
    if (!f)
        return NULL;
    ids = json_array();
    while (getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(r, "request_id"));
        if (id)
            json_array_append_new(ids, json_string(id));
        json_decref(r);
    }
    free(line);
    fclose(f);
    return ids;
}

json_t *th_fault_requests(th_cluster_t *c, const char *name, int n, int seed, char *path,
                          size_t len)
{
    char cmd[1024];
    snprintf(path, len, "%s/%s", c->logdir, name);
    snprintf(cmd, sizeof(cmd), "%s --count %d --seed %d > %s 2>/dev/null",
             th_bin("tools/gantry-loadgen"), n, seed, path);
    if (system(cmd) != 0) {
        fprintf(stderr, "  %s failed\n", cmd);
        return NULL;
    }
    return th_fault_ids_of(path);
}

json_t *th_fault_results(th_cluster_t *c)
{
    json_t *all = th_kafka_read_all(c->bootstrap, "gantry.results"), *by = json_object(), *m;
    size_t i;
    json_array_foreach (all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id = json_string_value(json_object_get(r, "request_id"));
        if (!id)
            id = "(no request_id)";
        json_t *list = json_object_get(by, id);
        if (!list) {
            list = json_array();
            json_object_set_new(by, id, list);
        }
        json_array_append_new(list, r ? r : json_null());
    }
    json_decref(all);
    return by;
}

json_t *th_fault_dlq(th_cluster_t *c)
{
    json_t *all = th_kafka_read_all(c->bootstrap, "gantry.dlq"), *out = json_array(), *m;
    size_t i;
    json_array_foreach (all, i, m) {
        json_t *v = json_object_get(m, "value");
        json_t *e = json_loads(json_string_value(v), 0, NULL);
        json_array_append_new(out,
                              json_pack("{s:I, s:o}", "bytes", (json_int_t)json_string_length(v),
                                        "entry", e ? e : json_null()));
    }
    json_decref(all);
    return out;
}

/* Messages now in topic, from its watermarks (no read). */
static long topic_end_sum(const char *bootstrap, const char *topic)
{
    char why[16];
    /* A group that never committed lags by everything: the lag of a group
     * nobody uses is the number of messages. */
    return th_group_lag(bootstrap, "gantry-fault-counter", topic, why, sizeof(why));
}

static long missing_results(th_cluster_t *c, json_t *ids)
{
    json_t *by = th_fault_results(c), *v;
    size_t i;
    long missing = 0;
    json_array_foreach (ids, i, v)
        missing += json_object_get(by, json_string_value(v)) == NULL;
    json_decref(by);
    return missing;
}

int th_fault_wait_results(th_cluster_t *c, json_t *ids, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    long n = (long)json_array_size(ids);
    for (;;) {
        if (topic_end_sum(c->bootstrap, "gantry.results") >= n && missing_results(c, ids) == 0)
            return 1;
        if (th_now_ms() >= deadline)
            break;
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL); /* between two reads of the topic, not waiting for a condition */
    }
    fprintf(stderr, "  %ld of %ld requests without a result after %d ms\n", missing_results(c, ids),
            n, timeout_ms);
    return 0;
}

typedef struct lag_arg {
    th_cluster_t *c;
    char why[1024];
} lag_arg_t;

static int nothing_stuck(void *arg)
{
    lag_arg_t *a = arg;
    a->why[0] = '\0';
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        char w[512];
        long lag = th_group_lag(a->c->bootstrap, inputs[i].group, inputs[i].topic, w, sizeof(w));
        if (lag != 0) {
            snprintf(a->why + strlen(a->why), sizeof(a->why) - strlen(a->why), "%s%s on %s: %s%s",
                     a->why[0] ? "; " : "", inputs[i].group, inputs[i].topic,
                     lag < 0 ? "offsets unreadable" : "lag ", lag < 0 ? "" : w);
            return 0;
        }
    }
    return 1;
}

int th_fault_check(th_cluster_t *c, const th_fault_expect_t *e)
{
    int timeout = e->timeout_ms > 0 ? e->timeout_ms : DEFAULT_TIMEOUT_MS, broken = 0;
    long n = (long)json_array_size(e->request_ids), dup = 0, none = 0, extra = 0;
    int64_t t0 = th_now_ms();

    /* 1. exactly one result per request */
    if (!th_fault_wait_results(c, e->request_ids, timeout))
        timeout = AFTER_FAILURE_MS;
    json_t *by = th_fault_results(c), *v, *want = json_object();
    size_t i;
    const char *id;
    json_array_foreach (e->request_ids, i, v) {
        json_object_set_new(want, json_string_value(v), json_true());
        json_t *list = json_object_get(by, json_string_value(v));
        if (!list && none++ < 5)
            fprintf(stderr, "  request %s has no result\n", json_string_value(v));
        if (json_array_size(list) > 1 && dup++ < 5) {
            char *a = json_dumps(json_array_get(list, 0), JSON_COMPACT);
            char *b = json_dumps(json_array_get(list, 1), JSON_COMPACT);
            fprintf(stderr, "  request %s has %zu results: %.200s | %.200s\n", json_string_value(v),
                    json_array_size(list), a, b);
            free(a);
            free(b);
        }
    }
    json_object_foreach (by, id, v)
        if (!json_object_get(want, id) && extra++ < 5)
            fprintf(stderr, "  result for a request never submitted: %s\n", id);
    TH_EQ_INT(none, 0);
    TH_EQ_INT(dup, 0);
    TH_EQ_INT(extra, 0);
    broken += none || dup || extra;
    fprintf(stderr, "  invariant 1 (one result each): %ld requests, %ld without, %ld with two+\n",
            n, none, dup);

    /* 2. billed once: wait for the ledger, then count on the topic and in PostgreSQL */
    if (!th_poll(th_cluster_usage_complete, c, timeout)) {
        fprintf(stderr, "  usage rows never matched the succeeded tasks\n");
        timeout = AFTER_FAILURE_MS;
    }
    unsigned before = CU_get_number_of_failures();
    th_check_usage(c, e->max_usage_events);
    broken += CU_get_number_of_failures() != before;

    /* 3. nothing leaked at HostedAI */
    if (!th_poll(th_cluster_released_all, c, timeout)) {
        fprintf(stderr, "  %ld allocation(s) outstanding at the mock HostedAI\n",
                th_mock_stat(c, "outstanding_allocations"));
        CU_FAIL("allocations outstanding");
        broken++;
        timeout = AFTER_FAILURE_MS;
    }

    /* 4. nothing stuck: every input partition committed to its end */
    lag_arg_t la = {.c = c};
    if (!th_poll(nothing_stuck, &la, timeout)) {
        fprintf(stderr, "  stuck: %s\n", la.why);
        CU_FAIL("committed offsets behind the end of an input topic");
        broken++;
    }
    fprintf(stderr, "  invariants checked in %lld ms: %d broken\n", (long long)(th_now_ms() - t0),
            broken);
    json_decref(want);
    json_decref(by);
    return broken;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    *(rd_kafka_resp_err_t *)opaque = m->err;
}

int th_fault_produce(th_cluster_t *c, const char *topic, const char *key, const char *value,
                     size_t len, long max_bytes)
{
    char err[256], num[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    snprintf(num, sizeof(num), "%ld", max_bytes);
    rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_resp_err_t delivered = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &delivered);
    if (rd_kafka_conf_set(conf, "message.max.bytes", num, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "  message.max.bytes %s: %s\n", num, err);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "  producer: %s\n", err);
        return -1;
    }
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                          RD_KAFKA_V_VALUE((void *)value, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && (e = rd_kafka_flush(rk, 30000)) == 0)
        e = delivered;
    if (e)
        fprintf(stderr, "  produce %zu bytes to %s: %s\n", len, topic, rd_kafka_err2str(e));
    rd_kafka_destroy(rk);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

int th_fault_submit(th_cluster_t *c, const char *path)
{
    json_t *cfg = json_load_file(c->config, 0, NULL);
    th_proc_t p;
    char log[512];
    if (!cfg)
        return -1;
    json_object_del(json_object_get(cfg, "kafka"), "producer_properties");
    char *text = json_dumps(cfg, JSON_INDENT(1));
    json_decref(cfg);
    const char *cpath = text ? th_tmpfile(".json", text) : NULL;
    free(text);
    if (!cpath)
        return -1;
    snprintf(log, sizeof(log), "%s/submit.log", c->logdir);
    const char *argv[] = {
        th_bin("tools/gantry"), "submit", "--config", cpath, "--file", path, NULL};
    if (th_proc_start(&p, argv, log) != 0)
        return -1;
    return th_proc_stop(&p, 0, 120000) == 0 ? 0 : -1;
}

int th_fault_sql(const char *conninfo, const char *sql)
{
    PGconn *conn = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *r = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(r);
        rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
        PQclear(r);
    }
    if (rc)
        fprintf(stderr, "  sql failed: %s: %s", sql, PQerrorMessage(conn));
    PQfinish(conn);
    return rc;
}

void th_fault_hold(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int th_fault_pg_ctl(const char *dir, const char *cmd)
{
    char line[1024], out[1024] = "";
    snprintf(line, sizeof(line), "bash %s %s %s 2>>%s/pg-ctl.log", th_src("tests/pg.sh"), cmd, dir,
             dir);
    FILE *f = popen(line, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        snprintf(out, sizeof(out), "%s", line);
    if (pclose(f) != 0) {
        fprintf(stderr, "  pg.sh %s %s failed (see %s/pg-ctl.log)\n", cmd, dir, dir);
        return -1;
    }
    if (strcmp(cmd, "start") == 0) {
        char host[64], port[16];
        if (sscanf(out, "export GANTRY_TEST_PGHOST=%63s GANTRY_TEST_PGPORT=%15s", host, port) != 2)
            return -1;
        setenv("GANTRY_TEST_PGHOST", host, 1);
        setenv("GANTRY_TEST_PGPORT", port, 1);
    }
    return 0;
}

int th_fault_pg_private(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/gantry-fault-pg.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    return th_fault_pg_ctl(dir, "start");
}
