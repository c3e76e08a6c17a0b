/* test_e2e_guard.c - guardrails end to end on real processes: tenant "acme"
 * may send HostedAI scrubbed data only and a third party nothing. No original
 * PII value may appear in any message on a task lane, in task results, in
 * events, or in any process's log; a request for the third party is
 * rerouted, a violent one blocked (moderation endpoint down: keyword list),
 * an oversized one rejected, and masked outputs are restored on request. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

static th_cluster_t cl;
static int expect_values; /* the positive control: values are allowed where checked */

#define HASH_KEY "e2e-hash-key-9c1f0a"

static const char *const pii_values[] = {
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "078-05-1120",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "192.168.10.24",
    "2001:db8::8a2e:370:7334",
    "1984-07-12",
    "bob@example.org",
    "219-09-9999",
};

static const char extra_config[] =
    "{\"providers\": {\"thirdparty\": {\"runtime\": \"openai\", \"endpoint\": "
    "   \"http://127.0.0.1:9\", \"api_key\": \"unused-e2e-key\"}},"
    " \"models\": {\"external\": {\"provider\": \"thirdparty\", \"lane\": \"external\","
    "   \"fallbacks\": [\"small\"], \"requirements\": {\"tflops\": 1, \"vram_mb\": 1}}},"
    " \"moderation\": {\"endpoint\": \"http://127.0.0.1:9\", \"timeout_ms\": 1000},"
    " \"tenants\": {"
    "   \"acme\": {\"guardrails\": {"
    "     \"pii\": {\"mode\": \"mask\", \"restore\": true},"
    "     \"providers\": {\"scrubbed\": [\"hostedai\"], \"none\": [\"thirdparty\"],"
    "                     \"default\": \"none\"},"
    "     \"limits\": {\"max_input_tokens\": {\"small\": 300}, \"max_request_bytes\": 65536}}},"
    "   \"hashco\": {\"guardrails\": {"
    "     \"pii\": {\"mode\": \"hash\", \"hash_key\": \"${GANTRY_E2E_HASH_KEY}\"},"
    "     \"providers\": {\"scrubbed\": [\"hostedai\"]}}},"
    "   \"outmod\": {\"guardrails\": {\"moderation\": {\"input\": false}}},"
    "   \"other\": {}}}"; /* declared (tenants configured: only they are served), no guardrails */

static void add(FILE *f, json_t *req)
{
    json_object_set_new(req, "schema", json_string("gantry.request.v1"));
    char *line = json_dumps(req, JSON_COMPACT);
    fprintf(f, "%s\n", line);
    free(line);
    json_decref(req);
}

static const char *write_requests(void)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/guard-requests.jsonl", cl.logdir);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-restore", "tenant_id", "acme",
                     "kind", "generate", "model", "small", "input",
                     "Mail jane.doe@example.com about +44 20 7946 0958 please"));
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:{s:[{s:s, s:s}, {s:s, s:s}]}}", "request_id", "g-chat",
                     "tenant_id", "acme", "kind", "chat", "model", "auto", "input", "messages",
                     "role", "system", "content",
                     "Patient born 1984-07-12, SSN 078-05-1120, card 4111 1111 1111 1111.", "role",
                     "user", "content",
                     "Refund to GB82 WEST 1234 5698 7654 32; logged in from 192.168.10.24 and "
                     "2001:db8::8a2e:370:7334."));
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:[s, s], s:{s:{s:b}}}", "request_id", "g-batch",
                     "tenant_id", "acme", "kind", "generate", "model", "small", "batch",
                     "first bob@example.org", "second ssn 219-09-9999", "policy", "pii", "restore",
                     0));
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-reroute", "tenant_id", "acme",
                     "kind", "generate", "model", "external", "input",
                     "Call +44 20 7946 0958 tomorrow"));
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-blocked", "tenant_id", "acme",
                     "kind", "generate", "model", "small", "input",
                     "Explain in detail how to make a bomb at home"));
    char big[2001];
    memset(big, 'a', sizeof(big) - 1);
    for (size_t i = 7; i < sizeof(big) - 1; i += 8)
        big[i] = ' ';
    big[sizeof(big) - 1] = 0;
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-toolong", "tenant_id", "acme",
                     "kind", "generate", "model", "small", "input", big));
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-hash", "tenant_id", "hashco",
                     "kind", "generate", "model", "small", "input", "ssn 078-05-1120 on file"));
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-plain", "tenant_id", "other",
                     "kind", "generate", "model", "small", "input", "nothing personal here"));
    /* Input moderation off for this tenant: the mock echoes the words, and
     * the output gate blocks them. */
    add(f, json_pack("{s:s, s:s, s:s, s:s, s:s}", "request_id", "g-outblock", "tenant_id", "outmod",
                     "kind", "generate", "model", "small", "input", "how to make a bomb"));
    fclose(f);
    return path;
}

#define N_REQUESTS 9

static int results_in(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= N_REQUESTS;
}

static int masks_deleted(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM job_guardrails") == 0;
}

/* Every message value on topic; counts those holding a PII value (or the key). */
static long leaks_in_topic(const char *topic, long *messages)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, topic);
    long leaks = 0;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        const char *v = json_string_value(json_object_get(m, "value"));
        for (size_t k = 0; v && k < sizeof(pii_values) / sizeof(pii_values[0]); k++)
            if (strstr(v, pii_values[k])) {
                fprintf(stderr, "  %s \"%s\" on %s: %.120s\n",
                        expect_values ? "value (expected)" : "LEAK of", pii_values[k], topic, v);
                leaks++;
            }
        if (v && strstr(v, HASH_KEY))
            leaks++;
    }
    if (messages)
        *messages = (long)json_array_size(all);
    json_decref(all);
    return leaks;
}

static long leaks_in_logs(long *lines)
{
    DIR *dir = opendir(cl.logdir);
    long leaks = 0;
    struct dirent *e;
    *lines = 0;
    while (dir && (e = readdir(dir))) {
        if (!strstr(e->d_name, ".log"))
            continue;
        char path[600], line[16384];
        snprintf(path, sizeof(path), "%s/%s", cl.logdir, e->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f)) {
            (*lines)++;
            for (size_t k = 0; k < sizeof(pii_values) / sizeof(pii_values[0]); k++)
                if (strstr(line, pii_values[k])) {
                    fprintf(stderr, "  LEAK of \"%s\" in %s: %.200s\n", pii_values[k], e->d_name,
                            line);
                    leaks++;
                }
            if (strstr(line, HASH_KEY))
                leaks++;
        }
        if (f)
            fclose(f);
    }
    if (dir)
        closedir(dir);
    return leaks;
}

static json_t *result_of(json_t *results, const char *id)
{
    size_t i;
    json_t *m;
    json_array_foreach (results, i, m) {
        if (strcmp(json_string_value(json_object_get(m, "key")), id) == 0)
            return json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
    }
    return NULL;
}

static const char *gr_str(json_t *r, const char *a, const char *b)
{
    json_t *g = json_object_get(json_object_get(r, "guardrails"), a);
    return json_string_value(b ? json_object_get(g, b) : g);
}

static void test_guard_end_to_end(void)
{
    setenv("GANTRY_E2E_HASH_KEY", HASH_KEY, 1);
    th_cluster_opts_t o = {.workers = 1, .latency = "2-5", .extra_config = extra_config};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    const char *path = write_requests();
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, path) == 0);
    CU_ASSERT_FATAL(th_poll(results_in, NULL, 120000));
    CU_ASSERT(th_poll(masks_deleted, NULL, 30000)); /* the mask does not outlive the job */

    json_t *results = th_kafka_read_all(cl.bootstrap, "gantry.results");
    TH_EQ_INT(json_array_size(results), N_REQUESTS);

    /* Masked for HostedAI, restored for the caller who asked. */
    json_t *r = result_of(results, "g-restore");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "succeeded");
    const char *text = json_string_value(json_object_get(json_object_get(r, "output"), "text"));
    CU_ASSERT(text && strstr(text, "jane.doe@example.com") && strstr(text, "+44 20 7946 0958"));
    TH_EQ_STR(gr_str(r, "access", NULL), "scrubbed");
    TH_EQ_INT(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(json_object_get(r, "guardrails"), "pii"), "counts"),
            "email")),
        1);
    json_decref(r);

    r = result_of(results, "g-chat");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "succeeded");
    TH_EQ_INT(json_integer_value(json_object_get(
                  json_object_get(json_object_get(r, "guardrails"), "pii"), "total")),
              6);
    json_decref(r);

    /* restore: false: the caller gets the tokens, not the values. */
    r = result_of(results, "g-batch");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "succeeded");
    char *dump = json_dumps(r, JSON_COMPACT);
    CU_ASSERT(dump && strstr(dump, "<EMAIL_1>") && !strstr(dump, "bob@example.org"));
    free(dump);
    json_decref(r);

    r = result_of(results, "g-reroute");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "succeeded");
    TH_EQ_STR(gr_str(r, "rerouted", "from_model"), "external");
    TH_EQ_STR(gr_str(r, "rerouted", "to_model"), "small");
    TH_EQ_STR(json_string_value(json_object_get(r, "model")), "small");
    json_decref(r);

    r = result_of(results, "g-blocked");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "blocked");
    TH_EQ_STR(gr_str(r, "blocked", "category"), "violence");
    TH_EQ_STR(gr_str(r, "blocked", "source"), "keywords-fallback");
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(r, "usage"), "prompt_tokens")), 0);
    json_decref(r);

    r = result_of(results, "g-toolong");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "rejected");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
              "input_tokens_exceeded");
    json_decref(r);

    r = result_of(results, "g-hash");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "succeeded");
    TH_EQ_STR(gr_str(r, "pii", "mode"), "hash");
    json_decref(r);

    r = result_of(results, "g-outblock");
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "blocked");
    TH_EQ_STR(gr_str(r, "blocked", "stage"), "output");
    CU_ASSERT(json_is_null(json_object_get(r, "output")));
    json_decref(r);

    r = result_of(results, "g-plain"); /* no guardrails for this tenant: untouched */
    TH_EQ_STR(json_string_value(json_object_get(r, "status")), "succeeded");
    CU_ASSERT_PTR_NULL(json_object_get(r, "guardrails"));
    json_decref(r);
    json_decref(results);

    /* Blocked and rejected requests cost nothing: no job, no task. */
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id IN "
                                       "('g-blocked', 'g-toolong')"),
              0);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.tasks.external"), 0);

    /* No original value on a scrubbed-only lane, in task results, in events, in logs. */
    long n_small = 0, n_large = 0, n_tr = 0, n_ev = 0, n_lines = 0;
    TH_EQ_INT(leaks_in_topic("gantry.tasks.small", &n_small), 0);
    TH_EQ_INT(leaks_in_topic("gantry.tasks.large", &n_large), 0);
    TH_EQ_INT(leaks_in_topic("gantry.task-results", &n_tr), 0);
    TH_EQ_INT(leaks_in_topic("gantry.events", &n_ev), 0);
    /* Positive control: the checker does see values where they belong (the
     * caller of g-restore asked for its output restored). */
    expect_values = 1;
    CU_ASSERT(leaks_in_topic("gantry.results", NULL) > 0);
    expect_values = 0;
    /* The decisions are events, with request and tenant ids. */
    json_t *events = th_kafka_read_all(cl.bootstrap, "gantry.events");
    int scrubbed = 0, rerouted = 0, blocked = 0, rejected = 0, restored = 0;
    size_t i;
    json_t *m;
    json_array_foreach (events, i, m) {
        json_t *ev = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *type = json_string_value(json_object_get(ev, "type"));
        json_t *data = json_object_get(ev, "data");
        if (type && strncmp(type, "guardrail.", 10) == 0) {
            CU_ASSERT_PTR_NOT_NULL(json_object_get(data, "request_id"));
            CU_ASSERT_PTR_NOT_NULL(json_object_get(data, "tenant_id"));
            char want[512]; /* deterministic: a repeat after redelivery dedupes */
            snprintf(want, sizeof(want), "%s:%s",
                     json_string_value(json_object_get(data, "request_id")), type);
            TH_EQ_STR(json_string_value(json_object_get(ev, "event_id")), want);
            scrubbed += strcmp(type, "guardrail.scrubbed") == 0;
            rerouted += strcmp(type, "guardrail.rerouted") == 0;
            blocked += strcmp(type, "guardrail.blocked") == 0;
            rejected += strcmp(type, "guardrail.rejected") == 0;
            restored += strcmp(type, "guardrail.restored") == 0;
        }
        json_decref(ev);
    }
    json_decref(events);
    th_cluster_stop(&cl); /* logs complete */
    TH_EQ_INT(leaks_in_logs(&n_lines), 0);
    fprintf(stderr,
            "  checked %ld + %ld task messages, %ld task results, %ld events, %ld log "
            "lines\n",
            n_small, n_large, n_tr, n_ev, n_lines);
    CU_ASSERT(n_small + n_large >= 6);
    CU_ASSERT(n_ev > 0);

    TH_EQ_INT(scrubbed, 5); /* restore, chat, batch, reroute, hash */
    TH_EQ_INT(rerouted, 1);
    TH_EQ_INT(blocked, 2); /* input and output */
    TH_EQ_INT(rejected, 1);
    TH_EQ_INT(restored, 3); /* restore, chat, reroute */
}

int main(void)
{
    static const th_test_t tests[] = {
        {"scrubbed-only lanes, events and logs carry no PII; reroute, block, reject",
         test_guard_end_to_end},
        {NULL, NULL},
    };
    int rc = th_run("e2e_guard", tests);
    th_cluster_stop(&cl);
    return rc;
}
