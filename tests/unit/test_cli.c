/* test_cli.c - the gantry binary end to end: usage, config errors, migrate, status (PostgreSQL),
 * submit and results (against an in-process librdkafka mock cluster). */
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "pg.h"

#define RUN_TIMEOUT_MS 60000

/* Output of one run of the binary. */
typedef struct run {
    int code; /* exit code, or -1 when it did not exit normally in time */
    char out[16384];
    char err[8192];
} run_t;

static void read_file_into(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs gantry with args (NULL-terminated), stdin from in_path when given. */
static void run_gantry(run_t *r, const char *in_path, const char *const *args)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = th_bin("tools/gantry");
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;

    char errpath[] = "/tmp/gantry-cli-err-XXXXXX";
    int efd = mkstemp(errpath);
    close(efd);
    memset(r, 0, sizeof(*r));
    r->code = -1;

    int saved_in = -1;
    if (in_path) {
        /* The child inherits our stdin: swap it around the fork. */
        saved_in = dup(STDIN_FILENO);
        FILE *f = freopen(in_path, "r", stdin);
        CU_ASSERT_FATAL(f != NULL);
    }
    th_proc_t p;
    int started = th_proc_start(&p, argv, errpath);
    if (in_path) {
        dup2(saved_in, STDIN_FILENO);
        close(saved_in);
        clearerr(stdin);
    }
    CU_ASSERT_FATAL(started == 0);

    int64_t deadline = th_now_ms() + RUN_TIMEOUT_MS;
    size_t used = 0;
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = p.out_fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        char tmp[4096];
        ssize_t got = read(p.out_fd, tmp, sizeof(tmp));
        if (got <= 0)
            break;
        size_t take =
            (size_t)got < sizeof(r->out) - 1 - used ? (size_t)got : sizeof(r->out) - 1 - used;
        memcpy(r->out + used, tmp, take);
        used += take;
    }
    r->out[used] = '\0';
    int st = th_proc_stop(&p, 0, (int)(deadline - th_now_ms() > 0 ? deadline - th_now_ms() : 1));
    if (st >= 0 && WIFEXITED(st))
        r->code = WEXITSTATUS(st);
    read_file_into(errpath, r->err, sizeof(r->err));
    unlink(errpath);
    if (r->code < 0)
        fprintf(stderr, "  gantry %s did not exit in time\n", args[0]);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *write_config(const char *bootstrap, const char *conninfo)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"%s\"},"
             " \"postgres\": {\"conninfo\": \"%s\"}, \"pools\": {}, \"models\": {}}",
             bootstrap, conninfo);
    return th_tmpfile(".json", text);
}

/* ---- usage and configuration ------------------------------------------ */

static void test_help_and_usage(void)
{
    run_t r;
    run_gantry(&r, NULL, (const char *[]){"--help", NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "migrate") && strstr(r.out, "submit") && strstr(r.out, "results") &&
              strstr(r.out, "status"));

    static const char *const cmds[] = {"migrate", "submit", "results", "status"};
    for (size_t i = 0; i < 4; i++) {
        run_gantry(&r, NULL, (const char *[]){cmds[i], "--help", NULL});
        TH_EQ_INT(r.code, 0);
        CU_ASSERT(strstr(r.out, "usage: gantry ") != NULL && strstr(r.out, "--config") != NULL);
    }

    const char *const *bad[] = {
        (const char *[]){NULL},
        (const char *[]){"frobnicate", NULL},
        (const char *[]){"migrate", "--bogus", NULL},
        (const char *[]){"migrate", "--config", NULL},
        (const char *[]){"status", NULL},
        (const char *[]){"status", "a", "b", NULL},
        (const char *[]){"submit", NULL},
        (const char *[]){"results", "--timeout-ms", "soon", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_gantry(&r, NULL, bad[i]);
        TH_EQ_INT(r.code, 2);
        TH_EQ_INT(count_lines(r.err), 1);
        CU_ASSERT(strncmp(r.err, "gantry", 6) == 0);
        TH_EQ_INT(strlen(r.out), 0);
    }
}

static void test_bad_config(void)
{
    run_t r;
    const char *cfg = th_tmpfile(".json", "{\"kafka\": {}, \"postgres\": {\"conninfo\": \"x\"}}");
    run_gantry(&r, NULL, (const char *[]){"status", "--config", cfg, "rid", NULL});
    TH_EQ_INT(r.code, 1);
    CU_ASSERT(strstr(r.err, "kafka.bootstrap_servers") != NULL);

    run_gantry(&r, NULL, (const char *[]){"migrate", "--config", "/nonexistent/gantry.json", NULL});
    TH_EQ_INT(r.code, 1);
    CU_ASSERT(strstr(r.err, "/nonexistent/gantry.json") != NULL);
}

/* ---- PostgreSQL ----------------------------------------------------------- */

static void test_migrate_twice(void)
{
    char ci[512], expect[64];
    run_t r;
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    const char *cfg = write_config("127.0.0.1:1", ci);

    /* Count what the source tree holds, so new migrations keep this valid. */
    char err[512];
    PGconn *c = gt_pg_connect_sync(ci, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    run_gantry(&r, NULL,
               (const char *[]){"migrate", "--config", cfg, "--dir", th_src("migrations"), NULL});
    TH_EQ_INT(r.code, 0);
    PGresult *res = PQexec(c, "SELECT count(*) FROM gantry_schema_migrations");
    CU_ASSERT_FATAL(PQresultStatus(res) == PGRES_TUPLES_OK);
    snprintf(expect, sizeof(expect), "applied %s migration(s)\n", PQgetvalue(res, 0, 0));
    CU_ASSERT(atoi(PQgetvalue(res, 0, 0)) >= 1);
    PQclear(res);
    TH_EQ_STR(r.out, expect);

    /* Second run, default directory (compiled in). */
    run_gantry(&r, NULL, (const char *[]){"migrate", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_STR(r.out, "applied 0 migration(s)\n");
    PQfinish(c);
}

static void test_status(void)
{
    char ci[512], err[512];
    run_t r;
    CU_ASSERT_FATAL(th_pg_create_db(ci, sizeof(ci)) == 0);
    const char *cfg = write_config("127.0.0.1:1", ci);
    PGconn *c = gt_pg_connect_sync(ci, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_FATAL(gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) >= 1);
    PGresult *res = PQexec(
        c, "INSERT INTO jobs (request_id, tenant_id, kind, model, lane, task_count, request)"
           " VALUES ('req-42', 'acme', 'chat', 'llama-8b', 'default', 2, '{\"secret\": 1}');"
           "INSERT INTO tasks (task_id, request_id, idx, kind, status, model, pool, attempts,"
           " error_code, error_message) VALUES"
           " ('req-42/0', 'req-42', 0, 'inference', 'failed', 'llama-8b', 'gpu-a', 3,"
           "  'timeout', 'no answer\nin time'),"
           " ('req-42/1', 'req-42', 1, 'gather', 'pending', NULL, NULL, 0, NULL, NULL)");
    CU_ASSERT_FATAL(PQresultStatus(res) == PGRES_COMMAND_OK);
    PQclear(res);

    run_gantry(&r, NULL, (const char *[]){"status", "--config", cfg, "req-42", NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "acme") != NULL);
    CU_ASSERT(strstr(r.out, "secret") == NULL);
    /* Aligned: every task row starts its STATUS column where the header does. */
    const char *head = strstr(r.out, "TASK_ID");
    const char *row0 = strstr(r.out, "req-42/0 ");
    const char *row1 = strstr(r.out, "req-42/1 ");
    CU_ASSERT_FATAL(head && row0 && row1);
    long col = strstr(head, "STATUS") - head;
    CU_ASSERT(strncmp(row0 + col, "failed", 6) == 0);
    CU_ASSERT(strncmp(row1 + col, "pending", 7) == 0);
    CU_ASSERT(strstr(row0, "timeout: no answer in time") != NULL);
    CU_ASSERT(strstr(row0, "gpu-a") != NULL);

    run_gantry(&r, NULL, (const char *[]){"status", "--config", cfg, "--json", "req-42", NULL});
    TH_EQ_INT(r.code, 0);
    json_t *doc = json_loads(r.out, 0, NULL);
    CU_ASSERT_FATAL(doc != NULL);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(doc, "job"), "status")), "running");
    TH_EQ_INT(json_array_size(json_object_get(doc, "tasks")), 2);
    TH_EQ_INT(json_integer_value(
                  json_object_get(json_array_get(json_object_get(doc, "tasks"), 0), "attempts")),
              3);
    CU_ASSERT(json_object_get(json_object_get(doc, "job"), "request") == NULL);
    json_decref(doc);

    run_gantry(&r, NULL, (const char *[]){"status", "--config", cfg, "nope", NULL});
    TH_EQ_INT(r.code, 1);
    CU_ASSERT(strstr(r.err, "no such request") != NULL);
    TH_EQ_INT(strlen(r.out), 0);
    PQfinish(c);
}

/* ---- Kafka (mock cluster in this process) --------------------------------- */

typedef struct mock {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
} mock_t;

static int mock_start(mock_t *m)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!m->rk)
        return -1;
    m->mc = rd_kafka_mock_cluster_new(m->rk, 1);
    if (!m->mc)
        return -1;
    snprintf(m->bootstrap, sizeof(m->bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(m->mc));
    if (rd_kafka_mock_topic_create(m->mc, "gantry.requests", 3, 1) ||
        rd_kafka_mock_topic_create(m->mc, "gantry.results", 2, 1))
        return -1;
    return 0;
}

static void mock_stop(mock_t *m)
{
    if (m->mc)
        rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk)
        rd_kafka_destroy(m->rk);
}

/* Reads every message of topic (keys and values) with a plain consumer. */
static int read_topic(const char *bootstrap, const char *topic, int nparts, int expect,
                      char keys[][64], char values[][256])
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "test-cli-reader", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        return -1;
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0;
    int64_t deadline = th_now_ms() + 20000;
    while (n < expect && th_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            snprintf(keys[n], 64, "%.*s", m->key ? (int)m->key_len : 6,
                     m->key ? (const char *)m->key : "(null)");
            snprintf(values[n], 256, "%.*s", (int)m->len, (const char *)m->payload);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

static void test_submit_and_results(void)
{
    mock_t m = {0};
    run_t r;
    CU_ASSERT_FATAL(mock_start(&m) == 0);
    const char *cfg = write_config(m.bootstrap, "host=127.0.0.1 port=1 dbname=unused");

    /* Nothing in the results topic yet: prints nothing, exits 0. */
    run_gantry(&r, NULL, (const char *[]){"results", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_STR(r.out, "");

    const char *lines = th_tmpfile(".jsonl", "{\"request_id\":\"a1\",\"tenant_id\":\"t\"}\n"
                                             "\n"
                                             "   \n"
                                             "{not json at all\n"
                                             "{\"request_id\":\"a2\",  \"x\": [1, 2]}");
    run_gantry(&r, NULL, (const char *[]){"submit", "--config", cfg, "--file", lines, NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_STR(r.out, "submitted 3\n");

    /* Bytes as given, keyed by request_id when it parses. */
    char keys[8][64], values[8][256];
    TH_EQ_INT(read_topic(m.bootstrap, "gantry.requests", 3, 3, keys, values), 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        if (strcmp(values[i], "{\"request_id\":\"a1\",\"tenant_id\":\"t\"}") == 0) {
            TH_EQ_STR(keys[i], "a1");
            seen |= 1;
        } else if (strcmp(values[i], "{not json at all") == 0) {
            TH_EQ_STR(keys[i], "(null)");
            seen |= 2;
        } else if (strcmp(values[i], "{\"request_id\":\"a2\",  \"x\": [1, 2]}") == 0) {
            TH_EQ_STR(keys[i], "a2");
            seen |= 4;
        }
    }
    TH_EQ_INT(seen, 7);

    /* Arguments and stdin go to another topic with --topic. */
    const char *stdin_lines = th_tmpfile(".jsonl", "{\"request_id\":\"r3\"}\n");
    run_gantry(&r, NULL,
               (const char *[]){"submit", "--config", cfg, "--topic", "gantry.results",
                                "{\"request_id\":\"r1\"}", "{\"request_id\":\"r2\"}", NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_STR(r.out, "submitted 2\n");
    run_gantry(&r, stdin_lines,
               (const char *[]){"submit", "--config", cfg, "--topic", "gantry.results", "--file",
                                "-", NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_STR(r.out, "submitted 1\n");

    run_gantry(&r, NULL, (const char *[]){"results", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_INT(count_lines(r.out), 3);
    CU_ASSERT(strstr(r.out, "{\"request_id\":\"r1\"}\n") &&
              strstr(r.out, "{\"request_id\":\"r2\"}\n") &&
              strstr(r.out, "{\"request_id\":\"r3\"}\n"));

    /* --follow --from-beginning prints what is there and what comes, until SIGINT. */
    th_proc_t p;
    const char *argv[] = {th_bin("tools/gantry"), "results", "--config", cfg, "--follow",
                          "--from-beginning",     NULL};
    CU_ASSERT_FATAL(th_proc_start(&p, argv, NULL) == 0);
    char rest[256];
    TH_EQ_INT(th_proc_wait_line(&p, "{\"request_id\":\"r3\"", rest, sizeof(rest), 20000), 0);
    run_gantry(&r, NULL,
               (const char *[]){"submit", "--config", cfg, "--topic", "gantry.results",
                                "{\"request_id\":\"late\"}", NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_INT(th_proc_wait_line(&p, "{\"request_id\":\"late\"", rest, sizeof(rest), 20000), 0);
    int st = th_proc_stop(&p, SIGINT, 10000);
    CU_ASSERT(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    mock_stop(&m);
}

static void test_submit_unreachable_fails(void)
{
    run_t r;
    char bootstrap[64];
    snprintf(bootstrap, sizeof(bootstrap), "127.0.0.1:%d", th_free_port());
    char text[512];
    snprintf(
        text, sizeof(text),
        "{\"kafka\": {\"bootstrap_servers\": \"%s\", \"properties\":"
        " {\"message.timeout.ms\": \"1500\"}},"
        " \"postgres\": {\"conninfo\": \"host=127.0.0.1 port=1\"}, \"pools\": {}, \"models\": {}}",
        bootstrap);
    const char *cfg = th_tmpfile(".json", text);
    run_gantry(&r, NULL,
               (const char *[]){"submit", "--config", cfg, "{\"request_id\":\"x\"}", NULL});
    TH_EQ_INT(r.code, 1);
    TH_EQ_STR(r.out, "submitted 0\n");
    CU_ASSERT(strstr(r.err, "1 failed") != NULL);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"--help and bad usage", test_help_and_usage},
        {"bad configuration", test_bad_config},
        {"migrate twice", test_migrate_twice},
        {"status of a seeded job", test_status},
        {"submit and results on a mock cluster", test_submit_and_results},
        {"submit fails when Kafka is unreachable", test_submit_unreachable_fails},
        {NULL, NULL},
    };
    return th_run("cli", tests);
}
