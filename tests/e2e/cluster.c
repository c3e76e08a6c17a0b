/* cluster.c - a whole Gantry on loopback for end-to-end tests. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"

#define MOCK_KEY "e2e-secret-key"

static int start_proc(th_cluster_t *c, th_proc_t *p, const char *name, const char *const *argv)
{
    char log[512];
    snprintf(log, sizeof(log), "%s/%s.log", c->logdir, name);
    return th_proc_start(p, argv, log);
}

int th_cluster_start_kafka(th_cluster_t *c, int port)
{
    char p[16], nb[16];
    snprintf(p, sizeof(p), "%d", port);
    snprintf(nb, sizeof(nb), "%d", c->kafka_brokers > 0 ? c->kafka_brokers : 1);
    snprintf(c->kafka_ctl, sizeof(c->kafka_ctl), "%s/kafka.ctl", c->logdir);
    char np[16];
    snprintf(np, sizeof(np), "%d", c->kafka_partitions);
    const char *kargv[10] = {th_bin("tools/gantry-kafka-dev"), "--brokers", nb, "--control",
                             c->kafka_ctl};
    int k = 5;
    if (c->kafka_partitions > 0) {
        kargv[k++] = "--partitions";
        kargv[k++] = np;
    }
    if (port) {
        kargv[k++] = "--port";
        kargv[k++] = p;
    }
    kargv[k] = NULL;
    if (start_proc(c, &c->kafka, "kafka", kargv) != 0 ||
        th_proc_wait_line(&c->kafka, "bootstrap=", c->bootstrap, sizeof(c->bootstrap), 20000))
        return -1;
    return 0;
}

int th_cluster_kafka_cmd(th_cluster_t *c, const char *cmd)
{
    char line[1100], answer[1200];
    int n = snprintf(line, sizeof(line), "%s\n", cmd);
    /* Non-blocking: a Kafka that is gone (no reader) fails at once. */
    int fd = open(c->kafka_ctl, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || n <= 0 || (size_t)n >= sizeof(line) || write(fd, line, (size_t)n) != n) {
        fprintf(stderr, "  kafka control %s: cannot send \"%s\": %s\n", c->kafka_ctl, cmd,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    /* Commands are answered in order and kafka-dev prints nothing else after
     * its bootstrap line: the next line is this command's answer. */
    if (th_proc_wait_line(&c->kafka, "", answer, sizeof(answer), 10000) != 0) {
        fprintf(stderr, "  kafka control: no answer to \"%s\"\n", cmd);
        return -1;
    }
    if (strncmp(answer, "ok ", 3) != 0) {
        fprintf(stderr, "  kafka control: %s\n", answer);
        return -1;
    }
    return 0;
}

int th_cluster_broker_down(th_cluster_t *c, int id)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "broker down %d", id);
    return th_cluster_kafka_cmd(c, cmd);
}

int th_cluster_broker_up(th_cluster_t *c, int id)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "broker up %d", id);
    return th_cluster_kafka_cmd(c, cmd);
}

int th_cluster_partition_leader(th_cluster_t *c, const char *topic, int partition, int id)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "leader %s %d %d", topic, partition, id);
    return th_cluster_kafka_cmd(c, cmd);
}

int th_cluster_start(th_cluster_t *c, const th_cluster_opts_t *o)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->logdir, sizeof(c->logdir), "%s/e2e-logs-%d", th_bin("tests"), (int)getpid());
    mkdir(c->logdir, 0755);
    fprintf(stderr, "  logs in %s\n", c->logdir);
    if (th_pg_create_db(c->conninfo, sizeof(c->conninfo)) != 0)
        return -1;

    c->kafka_brokers = o->kafka_brokers > 0 ? o->kafka_brokers : 1;
    c->kafka_partitions = o->kafka_partitions;
    if (th_cluster_start_kafka(c, o->kafka_port) != 0)
        return -1;
    char rate[32];
    snprintf(rate, sizeof(rate), "%g", o->fail_rate);
    const char *margv[24] = {th_bin("tools/gantry-mock-hostedai"),
                             "--port",
                             "0",
                             "--api-key",
                             MOCK_KEY,
                             "--latency-ms",
                             o->latency ? o->latency : "5-20",
                             "--fail-rate",
                             rate,
                             "--capacity-tflops",
                             o->capacity_tflops ? o->capacity_tflops : "1000000",
                             "--vram-mb",
                             "1000000000",
                             NULL};
    for (int i = 0, n = 13; o->mock_args && o->mock_args[i] && n < 23; i++)
        margv[n++] = o->mock_args[i];
    char addr[128];
    if (start_proc(c, &c->mock, "mock-hostedai", margv) != 0 ||
        th_proc_wait_line(&c->mock, "listening=", addr, sizeof(addr), 10000))
        return -1;
    snprintf(c->mock_url, sizeof(c->mock_url), "http://%s", addr);

    /* kafka: the local profile's settings (deploy/gantry.local.json, docs/operations.md): no
     * hop waits for the embedded cluster's fetch.wait.max.ms. */
    char cfg[4096];
    snprintf(cfg, sizeof(cfg),
             "{\"kafka\": {\"bootstrap_servers\": \"%s\","
             "   \"properties\": {\"socket.nagle.disable\": \"true\"},"
             "   \"consumer_properties\": {\"session.timeout.ms\": \"6000\","
             "     \"heartbeat.interval.ms\": \"500\", \"fetch.wait.max.ms\": \"5\","
             "     \"fetch.error.backoff.ms\": \"5\"},"
             "   \"producer_properties\": {\"linger.ms\": \"1\"}},"
             " \"postgres\": {\"conninfo\": \"%s\"},"
             " \"pools\": {\"pool-a\": {\"endpoint\": \"%s\", \"api_key\": \"%s\"}},"
             " \"models\": {\"small\": {\"pool\": \"pool-a\", \"lane\": \"small\","
             "                          \"requirements\": {\"tflops\": 10, \"vram_mb\": 8000}},"
             "             \"large\": {\"pool\": \"pool-a\", \"lane\": \"large\","
             "                          \"requirements\": {\"tflops\": 40, \"vram_mb\": 40000}}},"
             " \"routing\": {\"rules\": [{\"hint\": \"simple\", \"model\": \"small\"},"
             "                          {\"hint\": \"complex\", \"model\": \"large\"},"
             "                          {\"max_input_chars\": 60, \"model\": \"small\"}],"
             "             \"default\": \"large\"},"
             " \"worker\": {\"max_in_flight\": %d, \"heartbeat_ms\": 200,"
             "             \"retry\": {\"base_ms\": 20}},"
             " \"reaper\": {\"lease_ttl_ms\": 6000, \"interval_ms\": 300},"
             " \"commit_interval_ms\": 100, \"log\": {\"level\": \"info\"}}",
             c->bootstrap, c->conninfo, c->mock_url, MOCK_KEY,
             o->worker_in_flight ? o->worker_in_flight : 64);
    char *merged = NULL;
    if (o->extra_config) {
        json_t *base = json_loads(cfg, 0, NULL), *extra = json_loads(o->extra_config, 0, NULL);
        if (!base || !extra || json_object_update_recursive(base, extra) != 0) {
            fprintf(stderr, "  extra_config is not a JSON object\n");
            json_decref(base);
            json_decref(extra);
            return -1;
        }
        merged = json_dumps(base, JSON_INDENT(1));
        json_decref(base);
        json_decref(extra);
    }
    const char *path = th_tmpfile(".json", merged ? merged : cfg);
    free(merged);
    if (!path)
        return -1;
    snprintf(c->config, sizeof(c->config), "%s", path);

    th_proc_t mig;
    const char *gargv[] = {th_bin("tools/gantry"), "migrate", "--config", c->config, NULL};
    if (start_proc(c, &mig, "migrate", gargv) != 0 || th_proc_stop(&mig, 0, 30000) != 0)
        return -1;

    const char *dargv[] = {th_bin("dispatcher/gantry-dispatcher"),
                           "--config",
                           c->config,
                           "--id",
                           "dispatcher-e2e",
                           NULL};
    if (start_proc(c, &c->dispatcher, "dispatcher", dargv) != 0)
        return -1;
    for (int i = 0; i < o->workers; i++)
        if (th_cluster_add_worker(c) < 0)
            return -1;
    return 0;
}

int th_cluster_start_dispatcher(th_cluster_t *c, th_proc_t *p, const char *id)
{
    const char *argv[] = {
        th_bin("dispatcher/gantry-dispatcher"), "--config", c->config, "--id", id, NULL};
    /* The cluster's own dispatcher goes on in its log. */
    return start_proc(c, p, strcmp(id, "dispatcher-e2e") == 0 ? "dispatcher" : id, argv);
}

int th_cluster_restart_worker(th_cluster_t *c, int slot)
{
    char id[32], name[32];
    if (slot < 0 || slot >= c->n_workers)
        return -1;
    snprintf(id, sizeof(id), "worker-e2e-%d", slot);
    snprintf(name, sizeof(name), "worker-%d", slot);
    const char *argv[] = {th_bin("workers/gantry-worker"), "--config", c->config, "--id", id, NULL};
    return start_proc(c, &c->workers[slot], name, argv);
}

int th_cluster_add_worker(th_cluster_t *c)
{
    if (c->n_workers >= TH_MAX_WORKERS)
        return -1;
    int slot = c->n_workers++;
    char id[32], name[32];
    snprintf(id, sizeof(id), "worker-e2e-%d", slot);
    snprintf(name, sizeof(name), "worker-%d", slot);
    const char *argv[] = {th_bin("workers/gantry-worker"), "--config", c->config, "--id", id, NULL};
    return start_proc(c, &c->workers[slot], name, argv) == 0 ? slot : -1;
}

void th_cluster_stop(th_cluster_t *c)
{
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].pid > 0 && !c->workers[i].exited)
            th_proc_stop(&c->workers[i], SIGTERM, 30000);
    if (c->dispatcher.pid > 0)
        th_proc_stop(&c->dispatcher, SIGTERM, 30000);
    if (c->mock.pid > 0)
        th_proc_stop(&c->mock, SIGTERM, 10000);
    if (c->kafka.pid > 0)
        th_proc_stop(&c->kafka, SIGTERM, 10000);
}

int th_cluster_submit(th_cluster_t *c, const char *path)
{
    th_proc_t p;
    const char *argv[] = {
        th_bin("tools/gantry"), "submit", "--config", c->config, "--file", path, NULL};
    if (start_proc(c, &p, "submit", argv) != 0)
        return -1;
    return th_proc_stop(&p, 0, 60000);
}

static rd_kafka_t *kafka_client(rd_kafka_type_t type, const char *bootstrap, const char *group)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    if (group) /* only to read the group's offsets: this client never commits */
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    if (type == RD_KAFKA_CONSUMER)
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

json_t *th_kafka_read_all(const char *bootstrap, const char *topic)
{
    json_t *out = json_array();
    rd_kafka_t *rk = kafka_client(RD_KAFKA_CONSUMER, bootstrap, "e2e-reader");
    if (!rk)
        return out;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR || !md ||
        md->topic_cnt != 1) {
        rd_kafka_topic_destroy(rkt);
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return out;
    }
    int np = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(np);
    int64_t *high = calloc((size_t)np, sizeof(int64_t));
    long remaining = 0;
    for (int p = 0; p < np; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        high[p] = hi;
        remaining += hi - lo;
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = lo;
    }
    rd_kafka_assign(rk, parts);
    int64_t deadline = th_now_ms() + 20000;
    while (remaining > 0 && th_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err && m->offset < high[m->partition]) {
            json_array_append_new(
                out, json_pack("{s:s%, s:s%, s:i, s:I}", "key", m->key ? (char *)m->key : "",
                               m->key ? m->key_len : 0, "value",
                               m->payload ? (char *)m->payload : "", m->payload ? m->len : 0,
                               "partition", (int)m->partition, "offset", (json_int_t)m->offset));
            rd_kafka_headers_t *hdrs = NULL;
            const void *tp = NULL;
            size_t tp_len = 0;
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                rd_kafka_header_get_last(hdrs, "traceparent", &tp, &tp_len) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR &&
                tp)
                json_object_set_new(json_array_get(out, json_array_size(out) - 1), "traceparent",
                                    json_stringn(tp, tp_len));
            remaining--;
        }
        rd_kafka_message_destroy(m);
    }
    free(high);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

long th_topic_count(const char *bootstrap, const char *topic)
{
    json_t *all = th_kafka_read_all(bootstrap, topic);
    long n = (long)json_array_size(all);
    json_decref(all);
    return n;
}

int th_cluster_released_all(void *cluster)
{
    return th_mock_stat(cluster, "outstanding_allocations") == 0;
}

int th_cluster_usage_complete(void *cluster)
{
    th_cluster_t *c = cluster;
    return th_sql_long(c->conninfo, "SELECT count(*) FROM usage") ==
           th_sql_long(c->conninfo, "SELECT count(*) FROM tasks WHERE kind = 'inference'"
                                    " AND status = 'succeeded'");
}

long th_check_one_result_each(th_cluster_t *c, long n)
{
    json_t *results = th_kafka_read_all(c->bootstrap, "gantry.results");
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    long dup = 0;
    json_array_foreach (results, i, m) {
        const char *key = json_string_value(json_object_get(m, "key"));
        if (key && json_object_get(seen, key) && dup++ < 5)
            fprintf(stderr, "  duplicate result for %s\n", key);
        if (key)
            json_object_set_new(seen, key, json_true());
    }
    TH_EQ_INT(dup, 0);
    TH_EQ_INT(json_object_size(seen), n);
    TH_EQ_INT(json_array_size(results), n);
    json_decref(seen);
    json_decref(results);
    return dup;
}

long th_check_usage(th_cluster_t *c, int max_events_per_task)
{
    /* task_id -> {"n": events, "event_id": first, "ids": distinct event_ids} */
    json_t *events = th_kafka_read_all(c->bootstrap, "gantry.usage");
    json_t *per_task = json_object();
    json_t *succeeded =
        th_sql_column(c->conninfo, "SELECT task_id FROM tasks WHERE kind = 'inference'"
                                   " AND status = 'succeeded'");
    json_t *rows = th_sql_column(c->conninfo, "SELECT task_id FROM usage");
    long bad_json = 0, repeated = 0, over = 0, mixed = 0, missing = 0, extra = 0;
    long row_dup = 0, row_orphan = 0, shown = 0;
    size_t i;
    json_t *m, *v;
    const char *tid;

    json_array_foreach (events, i, m) {
        json_t *u = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *task = json_string_value(json_object_get(u, "task_id"));
        const char *eid = json_string_value(json_object_get(u, "event_id"));
        if (!task || !eid) {
            bad_json++;
            json_decref(u);
            continue;
        }
        json_t *t = json_object_get(per_task, task);
        if (!t) {
            t = json_pack("{s:i, s:{}}", "n", 0, "ids");
            json_object_set_new(per_task, task, t);
        }
        json_object_set_new(t, "n", json_integer(json_integer_value(json_object_get(t, "n")) + 1));
        json_object_set_new(json_object_get(t, "ids"), eid, json_true());
        json_decref(u);
    }
    json_object_foreach (per_task, tid, v) {
        long n = (long)json_integer_value(json_object_get(v, "n"));
        if (n > 1)
            repeated++;
        if (max_events_per_task > 0 && n > max_events_per_task && shown++ < 5)
            fprintf(stderr, "  task %s: %ld usage events on gantry.usage\n", tid, n);
        if (max_events_per_task > 0 && n > max_events_per_task)
            over++;
        if (json_object_size(json_object_get(v, "ids")) != 1) {
            mixed++;
            if (shown++ < 5)
                fprintf(stderr, "  task %s: usage events under %zu event_ids\n", tid,
                        json_object_size(json_object_get(v, "ids")));
        }
    }
    /* Each succeeded task has events; events of a task that did not succeed are a charge for
     * nothing. */
    json_t *ok = json_object();
    json_array_foreach (succeeded, i, v) {
        json_object_set_new(ok, json_string_value(v), json_true());
        if (!json_object_get(per_task, json_string_value(v)) && missing++ < 5)
            fprintf(stderr, "  task %s succeeded without a usage event\n", json_string_value(v));
    }
    json_object_foreach (per_task, tid, v)
        if (!json_object_get(ok, tid) && extra++ < 5)
            fprintf(stderr, "  task %s has usage events but did not succeed\n", tid);
    /* PostgreSQL: one row per task, for tasks that had an event. */
    json_t *seen = json_object();
    json_array_foreach (rows, i, v) {
        const char *t = json_string_value(v);
        if (json_object_get(seen, t) && row_dup++ < 5)
            fprintf(stderr, "  task %s has more than one usage row\n", t);
        json_object_set_new(seen, t, json_true());
        if (!json_object_get(per_task, t) && row_orphan++ < 5)
            fprintf(stderr, "  usage row for task %s without an event on gantry.usage\n", t);
    }
    fprintf(stderr,
            "  usage: %zu events on gantry.usage for %zu tasks (%ld repeated), "
            "%zu rows, %zu succeeded tasks\n",
            json_array_size(events), json_object_size(per_task), repeated, json_array_size(rows),
            json_array_size(succeeded));
    CU_ASSERT_PTR_NOT_NULL(succeeded);
    CU_ASSERT_PTR_NOT_NULL(rows);
    TH_EQ_INT(bad_json, 0);
    TH_EQ_INT(over, 0);
    TH_EQ_INT(mixed, 0);
    TH_EQ_INT(missing, 0);
    TH_EQ_INT(extra, 0);
    TH_EQ_INT(row_dup, 0);
    TH_EQ_INT(row_orphan, 0);
    TH_EQ_INT(json_array_size(rows), json_array_size(succeeded));
    TH_EQ_INT(json_object_size(per_task), json_array_size(succeeded));
    long n_rows = (long)json_array_size(rows);
    json_decref(seen);
    json_decref(ok);
    json_decref(rows);
    json_decref(succeeded);
    json_decref(per_task);
    json_decref(events);
    return n_rows;
}

long th_check_billed_once(th_cluster_t *c)
{
    return th_check_usage(c, 0);
}

json_t *th_sql_column(const char *conninfo, const char *sql)
{
    PGconn *conn = PQconnectdb(conninfo);
    json_t *out = NULL;
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "  sql: cannot connect: %s", PQerrorMessage(conn));
    } else {
        PGresult *r = PQexec(conn, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            out = json_array();
            for (int i = 0; i < PQntuples(r); i++)
                json_array_append_new(out, json_string(PQgetvalue(r, i, 0)));
        } else {
            fprintf(stderr, "  sql failed: %s: %s", sql, PQerrorMessage(conn));
        }
        PQclear(r);
    }
    PQfinish(conn);
    return out;
}

long th_log_count(const th_cluster_t *c, const char *name, const char *needle)
{
    char path[512], line[8192];
    long n = 0;
    snprintf(path, sizeof(path), "%s/%s", c->logdir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

long th_sql_long(const char *conninfo, const char *sql)
{
    PGconn *conn = PQconnectdb(conninfo);
    long v = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *r = PQexec(conn, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
            v = atol(PQgetvalue(r, 0, 0));
        else
            fprintf(stderr, "  sql failed: %s: %s", sql, PQerrorMessage(conn));
        PQclear(r);
    }
    PQfinish(conn);
    return v;
}

typedef struct body {
    char *data;
    size_t len;
} body_t;

static size_t on_chunk(char *ptr, size_t size, size_t n, void *arg)
{
    body_t *b = arg;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (!grown)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, size * n);
    b->len += size * n;
    b->data[b->len] = 0;
    return size * n;
}

json_t *th_http_json(const char *url, const char *key)
{
    CURL *h = curl_easy_init();
    body_t b = {0};
    char auth[256];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    struct curl_slist *hdrs = curl_slist_append(NULL, auth);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_chunk);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    json_t *doc = NULL;
    if (curl_easy_perform(h) == CURLE_OK && b.data)
        doc = json_loads(b.data, 0, NULL);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(b.data);
    return doc;
}

long th_mock_stat(th_cluster_t *c, const char *field)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/stats", c->mock_url);
    json_t *doc = th_http_json(url, MOCK_KEY);
    long v = doc ? (long)json_integer_value(json_object_get(doc, field)) : -1;
    json_decref(doc);
    return v;
}

long th_results_for(th_cluster_t *c, const char *rid, const char **status)
{
    json_t *all = th_kafka_read_all(c->bootstrap, "gantry.results");
    long n = 0;
    size_t i;
    json_t *m;
    static char last[32];
    json_array_foreach (all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id = json_string_value(json_object_get(r, "request_id"));
        if (id && strcmp(id, rid) == 0) {
            n++;
            snprintf(last, sizeof(last), "%s", json_string_value(json_object_get(r, "status")));
        }
        json_decref(r);
    }
    json_decref(all);
    if (status)
        *status = last;
    return n;
}

long th_group_lag(const char *bootstrap, const char *group, const char *topic, char *why,
                  size_t len)
{
    rd_kafka_t *rk = kafka_client(RD_KAFKA_CONSUMER, bootstrap, group);
    long lag = -1;
    if (why && len)
        why[0] = '\0';
    if (!rk)
        return -1;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == 0 && md->topic_cnt == 1 &&
        md->topics[0].partition_cnt > 0) {
        int np = md->topics[0].partition_cnt;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
        for (int p = 0; p < np; p++)
            rd_kafka_topic_partition_list_add(l, topic, p);
        if (rd_kafka_committed(rk, l, 10000) == 0) {
            lag = 0;
            for (int p = 0; p < np && lag >= 0; p++) {
                int64_t lo = 0, hi = 0, off = l->elems[p].offset;
                if (l->elems[p].err ||
                    rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000) != 0) {
                    lag = -1;
                    break;
                }
                int64_t from = off < 0 ? lo : off;
                if (from < hi) {
                    lag += (long)(hi - from);
                    if (why && strlen(why) + 64 < len)
                        snprintf(why + strlen(why), len - strlen(why),
                                 "%sp%d committed %lld end %lld", why[0] ? ", " : "", p,
                                 (long long)off, (long long)hi);
                }
            }
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return lag;
}

int th_group_caught_up(const char *bootstrap, const char *group, const char *topic)
{
    rd_kafka_t *rk = kafka_client(RD_KAFKA_CONSUMER, bootstrap, group);
    if (!rk)
        return 0;
    int done = 0;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == 0 && md->topic_cnt == 1) {
        int np = md->topics[0].partition_cnt;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
        for (int p = 0; p < np; p++)
            rd_kafka_topic_partition_list_add(l, topic, p);
        if (np > 0 && rd_kafka_committed(rk, l, 10000) == 0) {
            done = 1;
            for (int p = 0; p < np; p++) {
                int64_t lo = 0, hi = 0;
                rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
                int64_t off = l->elems[p].offset;
                if (hi > lo && (off < 0 ? lo : off) < hi)
                    done = 0;
            }
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return done;
}

int th_kafka_produce(const char *bootstrap, const char *topic, const char *key, const char *value)
{
    rd_kafka_t *rk = kafka_client(RD_KAFKA_PRODUCER, bootstrap, NULL);
    if (!rk)
        return -1;
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                          RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        e = rd_kafka_flush(rk, 20000);
    rd_kafka_destroy(rk);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}
