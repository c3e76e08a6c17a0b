/* mock_hostedai.c - gantry-mock-hostedai: a HostedAI GPU pool over loopback HTTP for tests.
 *
 * Models pool capacity (TFLOPS, VRAM, overcommit), inference latency and
 * injected faults, and reports outstanding allocations so tests can prove
 * nothing leaked. The HTTP core is tools/mockhttp.c: a request that must wait
 * is parked without holding a thread, so thousands of slow requests cost none. */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "json_text.h"
#include "log.h"
#include "mockcli.h"
#include "mockhttp.h"
#include "rand.h"

#define PROG "gantry-mock-hostedai"
#define MAX_BODY (1024 * 1024)
#define TEXT_WORDS 8
#define TEXT_WORD_BYTES 160

typedef enum { EP_ALLOCATE, EP_INFERENCE, EP_RELEASE, EP_COUNT } endpoint_t;
static const char *const endpoint_names[EP_COUNT] = {"allocate", "inference", "release"};

typedef struct mock_opts {
    const char *bind;
    int port;
    const char *api_key;
    int lat_min, lat_max;             /* inference latency, ms */
    int alloc_lat_min, alloc_lat_max; /* allocate latency, ms */
    double fail_rate;
    double cap_tflops;
    int64_t cap_vram_mb;
    uint64_t seed;
    unsigned threads;
    int64_t release_fail_ms; /* every release answers 503 this long from the first */
} mock_opts_t;

typedef struct mock {
    mock_opts_t o;
    pthread_mutex_t mu; /* everything below */
    json_t *allocs;     /* allocation_id -> object (with a private "_t0" mono ms) */
    json_t *trace_ids;  /* trace id of each traceparent received -> requests (capped) */
    uint64_t next_id, seq;
    int64_t used_mtflops, cap_mtflops; /* milli-TFLOPS: sums stay exact */
    int64_t used_vram_mb;
    uint64_t allocations_total, releases_total, inference_ok, inference_failed;
    uint64_t faults[EP_COUNT], rejected_too_large, rejected_full, unauthorized;
    uint64_t requests_total, concurrent, peak_concurrent;
    uint64_t connections_total, connections_open; /* proves clients reuse connections */
    uint64_t releases_refused;                    /* 503s of --release-fail-ms */
    int64_t started_ms;                           /* mono ms at start */
    int64_t release_fail_from; /* mono ms of the first release (--release-fail-ms) */
} mock_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " --port P [options]\n"
               "  --port P                TCP port on the bind address (0 picks a free one)\n"
               "  --bind ADDR             IPv4 address to listen on (default 127.0.0.1)\n"
               "  --api-key K             bearer key clients must send (or GANTRY_MOCK_API_KEY)\n"
               "  --latency-ms A-B        inference latency, uniform in A..B ms (default 5-20)\n"
               "  --alloc-latency-ms A-B  allocate latency (default 0-0)\n"
               "  --fail-rate R           probability 0..1 of an injected 500/503/429 on\n"
               "                          allocate, inference and release (default 0)\n"
               "  --capacity-tflops T     pool compute capacity (default 1000)\n"
               "  --vram-mb V             pool memory capacity (default 640000)\n"
               "  --seed N                random seed (default 42)\n"
               "  --threads N             MHD polling threads (default 1)\n"
               "  --release-fail-ms MS    every DELETE /v1/allocate/{id} answers 503 for MS ms\n"
               "                          from the first one, then works (default 0)\n"
               "  --help                  this text\n"
               "Prints \"listening=ADDR:PORT\" when ready; stops on SIGINT/SIGTERM.\n"
               "GET /v1/trace-ids: requests seen per trace id of their traceparent header.\n"
               "GET /v1/allocations?label.K=V: only allocations whose label K is V (ANDed).\n"
               "An allocate is made when it arrives: one answered late (--alloc-latency-ms)\n"
               "stays allocated even when the client gave up waiting for the answer.\n");
}

#define HTTP_NO_CONTENT 204

/* Sets an error reply {"error":{"code","message"}}. */
static void set_error(mh_req_t *r, unsigned status, const char *code, const char *msg)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);

    mh_reply_text(r, status, j ? json_dumps(j, JSON_COMPACT) : NULL);
    json_decref(j);
}

/* Sets a reply, taking the reference to j. */
static void set_json(mh_req_t *r, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (!text && status != HTTP_NO_CONTENT)
        set_error(r, 500, "internal", "out of memory");
    else
        mh_reply_text(r, status, text);
}

/* ---- endpoints --------------------------------------------------------- */

/* Decides an injected fault for this request. Returns 1 when r now holds the
 * fault reply and the operation must not run. */
static int inject_fault(mock_t *m, mh_req_t *r, uint64_t *rng, endpoint_t ep)
{
    static const unsigned codes[3] = {500, 503, 429};
    unsigned status;

    if (m->o.fail_rate <= 0 || gt_rand_unit_r(rng) >= m->o.fail_rate)
        return 0;
    status = codes[gt_rand_next(rng) % 3];
    set_error(r, status, "injected_fault", "fault injected by the mock");
    if (status == 429)
        mh_set_retry_after(r, (int)(gt_rand_next(rng) % 2));
    pthread_mutex_lock(&m->mu);
    m->faults[ep]++;
    if (ep == EP_INFERENCE)
        m->inference_failed++;
    pthread_mutex_unlock(&m->mu);
    return 1;
}

static json_t *parse_body(mh_req_t *r, const char *body, size_t len)
{
    json_t *j;

    if (mh_too_big(r)) {
        set_error(r, 413, "payload_too_large", "request body over 1 MiB");
        return NULL;
    }
    j = gt_json_parse(body ? body : "", len, 0, NULL);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        set_error(r, 400, "invalid_request", "body is not a JSON object");
        return NULL;
    }
    return j;
}

static void do_allocate(mock_t *m, mh_req_t *r, uint64_t *rng, const char *body, size_t len)
{
    json_t *in = NULL, *req, *labels, *v, *a = NULL, *reply;
    const char *pool_id, *model = NULL;
    double tflops = 0;
    json_int_t vram = 0;
    int overcommit = 0;
    int64_t mtf;
    char id[32], created[40];

    if (inject_fault(m, r, rng, EP_ALLOCATE))
        return;
    if (!(in = parse_body(r, body, len)))
        return;
    pool_id = json_string_value(json_object_get(in, "pool_id"));
    req = json_object_get(in, "requirements");
    labels = json_object_get(in, "labels");
    if (!pool_id || !*pool_id) {
        set_error(r, 400, "invalid_request", "pool_id: expected a non-empty string");
        goto out;
    }
    if (!json_is_object(req)) {
        set_error(r, 400, "invalid_request", "requirements: expected an object");
        goto out;
    }
    if ((v = json_object_get(req, "tflops"))) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e9) {
            set_error(r, 400, "invalid_request", "requirements.tflops: expected a number >= 0");
            goto out;
        }
        tflops = json_number_value(v);
    }
    if ((v = json_object_get(req, "vram_mb"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            set_error(r, 400, "invalid_request", "requirements.vram_mb: expected an integer >= 0");
            goto out;
        }
        vram = json_integer_value(v);
    }
    if ((v = json_object_get(req, "model")) && !(model = json_string_value(v))) {
        set_error(r, 400, "invalid_request", "requirements.model: expected a string");
        goto out;
    }
    if ((v = json_object_get(in, "overcommit"))) {
        if (!json_is_boolean(v)) {
            set_error(r, 400, "invalid_request", "overcommit: expected a boolean");
            goto out;
        }
        overcommit = json_is_true(v);
    }
    if (labels) {
        const char *k;

        if (!json_is_object(labels)) {
            set_error(r, 400, "invalid_request", "labels: expected an object of strings");
            goto out;
        }
        json_object_foreach (labels, k, v) {
            if (!json_is_string(v)) {
                set_error(r, 400, "invalid_request", "labels: expected an object of strings");
                goto out;
            }
        }
    }
    mtf = llround(tflops * 1000);

    pthread_mutex_lock(&m->mu);
    /* Larger than the whole pool: no amount of waiting (or overcommit,
     * which time-shares devices but cannot enlarge one) makes it fit. */
    if (mtf > m->cap_mtflops || vram > m->o.cap_vram_mb) {
        m->rejected_too_large++;
        pthread_mutex_unlock(&m->mu);
        set_error(r, 409, "insufficient_capacity", "request exceeds the pool's capacity");
        goto out;
    }
    if (!overcommit &&
        (m->used_mtflops + mtf > m->cap_mtflops || m->used_vram_mb + vram > m->o.cap_vram_mb)) {
        m->rejected_full++;
        pthread_mutex_unlock(&m->mu);
        set_error(r, 429, "pool_exhausted", "pool is full; retry later");
        mh_set_retry_after(r, 1);
        goto out;
    }
    snprintf(id, sizeof(id), "alloc-%" PRIu64, ++m->next_id);
    gt_clock_fmt(gt_clock_wall_ms(), created, sizeof(created));
    a = json_pack("{s:s,s:s,s:f,s:I,s:s,s:o,s:s,s:I,s:I}", "allocation_id", id, "pool_id", pool_id,
                  "tflops", tflops, "vram_mb", vram, "model", model ? model : "", "labels",
                  labels ? json_incref(labels) : json_object(), "created_at", created, "_t0",
                  (json_int_t)gt_clock_mono_ms(), "_mtf", (json_int_t)mtf);
    if (!a || json_object_set(m->allocs, id, a) != 0) {
        pthread_mutex_unlock(&m->mu);
        set_error(r, 500, "internal", "out of memory");
        goto out;
    }
    m->used_mtflops += mtf;
    m->used_vram_mb += vram;
    m->allocations_total++;
    pthread_mutex_unlock(&m->mu);

    reply = json_pack("{s:s,s:s,s:f,s:I,s:s}", "allocation_id", id, "pool_id", pool_id, "tflops",
                      tflops, "vram_mb", vram, "created_at", created);
    set_json(r, 201, reply);
    mh_set_delay(r, m->o.alloc_lat_min +
                        (int64_t)(gt_rand_next(rng) %
                                  (uint64_t)(m->o.alloc_lat_max - m->o.alloc_lat_min + 1)));
out:
    json_decref(a);
    json_decref(in);
}

static void do_release(mock_t *m, mh_req_t *r, uint64_t *rng, const char *id)
{
    json_t *a;

    if (inject_fault(m, r, rng, EP_RELEASE))
        return;
    pthread_mutex_lock(&m->mu);
    /* The window opens at the first release, not at start: however long a
     * test takes to get traffic here, its releases meet the fault. */
    if (m->o.release_fail_ms > 0 && !m->release_fail_from)
        m->release_fail_from = gt_clock_mono_ms();
    if (m->o.release_fail_ms > 0 &&
        gt_clock_mono_ms() - m->release_fail_from < m->o.release_fail_ms) {
        m->releases_refused++;
        pthread_mutex_unlock(&m->mu);
        set_error(r, 503, "release_unavailable", "releases are failing (--release-fail-ms)");
        return;
    }
    a = json_object_get(m->allocs, id);
    if (!a) {
        pthread_mutex_unlock(&m->mu);
        set_error(r, 404, "allocation_not_found", "no such allocation");
        return;
    }
    m->used_mtflops -= json_integer_value(json_object_get(a, "_mtf"));
    m->used_vram_mb -= json_integer_value(json_object_get(a, "vram_mb"));
    m->releases_total++;
    json_object_del(m->allocs, id);
    pthread_mutex_unlock(&m->mu);
    set_json(r, HTTP_NO_CONTENT, NULL);
}

/* Appends up to TEXT_WORDS whitespace-separated words of prompt to buf:
 * cutting at ASCII whitespace keeps UTF-8 intact. */
static void first_words(const char *p, size_t n, char *buf, size_t cap)
{
    size_t len = strlen(buf), i = 0;
    int words = 0;

    while (i < n && words < TEXT_WORDS) {
        size_t s, e;

        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
            i++;
        s = i;
        while (i < n && !(p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
            i++;
        e = i;
        if (e == s)
            break;
        if (len + 1 + (e - s) + 1 > cap)
            break;
        buf[len++] = ' ';
        memcpy(buf + len, p + s, e - s);
        len += e - s;
        buf[len] = '\0';
        words++;
    }
}

static void do_inference(mock_t *m, mh_req_t *r, uint64_t *rng, const char *body, size_t len)
{
    json_t *in = NULL, *v, *reply = NULL, *embeddings = NULL;
    const char *alloc_id;
    char *prompt = NULL, model[256], text[64 + TEXT_WORD_BYTES];
    size_t plen = 0;
    json_int_t max_tokens = 64;
    uint64_t h;
    int64_t ptok, ctok;

    if (inject_fault(m, r, rng, EP_INFERENCE))
        return;
    if (!(in = parse_body(r, body, len)))
        goto fail;
    alloc_id = json_string_value(json_object_get(in, "allocation_id"));
    if (!alloc_id) {
        set_error(r, 400, "invalid_request", "allocation_id: expected a string");
        goto fail;
    }
    if ((v = json_object_get(in, "max_tokens"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            set_error(r, 400, "invalid_request", "max_tokens: expected an integer >= 0");
            goto fail;
        }
        max_tokens = json_integer_value(v);
    }
    if ((v = json_object_get(in, "temperature")) && !json_is_number(v)) {
        set_error(r, 400, "invalid_request", "temperature: expected a number");
        goto fail;
    }

    /* The prompt: "prompt", or chat "messages" joined, or embedding "input". */
    if ((v = json_object_get(in, "prompt"))) {
        if (!json_is_string(v)) {
            set_error(r, 400, "invalid_request", "prompt: expected a string");
            goto fail;
        }
        prompt = strndup(json_string_value(v), json_string_length(v));
        plen = json_string_length(v);
    } else if ((v = json_object_get(in, "messages")) || (v = json_object_get(in, "input"))) {
        int is_input = !json_object_get(in, "messages");
        json_t *arr = json_is_string(v) ? json_pack("[O]", v) : json_incref(v), *e;
        size_t i;

        if (!json_is_array(arr) || json_array_size(arr) == 0) {
            json_decref(arr);
            set_error(r, 400, "invalid_request",
                      is_input ? "input: expected a string or an array of strings"
                               : "messages: expected a non-empty array");
            goto fail;
        }
        if (is_input)
            embeddings = json_array();
        prompt = calloc(1, 1);
        if (!prompt || (is_input && !embeddings)) {
            json_decref(arr);
            set_error(r, 500, "internal", "out of memory");
            goto fail;
        }
        json_array_foreach (arr, i, e) {
            json_t *c = is_input ? e : json_object_get(e, "content");
            const char *s = json_string_value(c);
            size_t n = json_string_length(c);
            char *p;

            if (!s) {
                set_error(r, 400, "invalid_request",
                          is_input ? "input: expected strings"
                                   : "messages[].content: expected a string");
                json_decref(arr);
                goto fail;
            }
            if (!(p = realloc(prompt, plen + n + 2))) {
                json_decref(arr);
                set_error(r, 500, "internal", "out of memory");
                goto fail;
            }
            prompt = p;
            if (plen)
                prompt[plen++] = '\n';
            memcpy(prompt + plen, s, n);
            plen += n;
            prompt[plen] = '\0';
            if (is_input) {
                json_t *vec = json_array();
                uint64_t eh = gt_rand_seed_of(s, n);

                for (int d = 0; d < 8; d++)
                    json_array_append_new(vec, json_real(gt_rand_unit_r(&eh) * 2 - 1));
                json_array_append_new(embeddings, vec);
            }
        }
        json_decref(arr);
    } else {
        set_error(r, 400, "invalid_request", "one of prompt, messages or input is required");
        goto fail;
    }
    if (!prompt) {
        set_error(r, 500, "internal", "out of memory");
        goto fail;
    }

    pthread_mutex_lock(&m->mu);
    v = json_object_get(m->allocs, alloc_id);
    if (!v) {
        m->inference_failed++;
        pthread_mutex_unlock(&m->mu);
        set_error(r, 404, "allocation_not_found", "no such allocation");
        goto out;
    }
    snprintf(model, sizeof(model), "%s", json_string_value(json_object_get(v, "model")));
    m->inference_ok++;
    pthread_mutex_unlock(&m->mu);
    if (!model[0])
        snprintf(model, sizeof(model), "mock-model");

    h = gt_rand_seed_of(prompt, plen);
    ptok = plen ? (int64_t)((plen + 3) / 4) : 1;
    if (embeddings) {
        reply = json_pack("{s:s,s:O,s:{s:I,s:I},s:s}", "allocation_id", alloc_id, "embeddings",
                          embeddings, "usage", "prompt_tokens", (json_int_t)ptok,
                          "completion_tokens", (json_int_t)0, "model", model);
    } else {
        ctok = 8 + (int64_t)(h % 56);
        if (ctok > max_tokens)
            ctok = max_tokens;
        snprintf(text, sizeof(text), "gantry-mock: %016" PRIx64, h);
        first_words(prompt, plen, text, sizeof(text));
        reply = json_pack("{s:s,s:s,s:{s:I,s:I},s:s}", "allocation_id", alloc_id, "text", text,
                          "usage", "prompt_tokens", (json_int_t)ptok, "completion_tokens",
                          (json_int_t)ctok, "model", model);
    }
    set_json(r, 200, reply);
    mh_set_delay(r, m->o.lat_min +
                        (int64_t)(gt_rand_next(rng) % (uint64_t)(m->o.lat_max - m->o.lat_min + 1)));
    goto out;

fail:
    pthread_mutex_lock(&m->mu);
    m->inference_failed++;
    pthread_mutex_unlock(&m->mu);
out:
    json_decref(embeddings);
    json_decref(in);
    free(prompt);
}

/* Collects the query's label.K=V arguments into an object {K: V}. */
static void collect_label(void *want, const char *key, const char *value)
{
    if (key && strncmp(key, "label.", 6) == 0 && key[6])
        json_object_set_new(want, key + 6, json_string(value ? value : ""));
}

/* Does allocation a carry every label of want? */
static int labels_match(const json_t *a, const json_t *want)
{
    const json_t *labels = json_object_get(a, "labels");
    const char *k;
    json_t *v;

    json_object_foreach ((json_t *)want, k, v) {
        const char *have = json_string_value(json_object_get(labels, k));
        if (!have || strcmp(have, json_string_value(v)) != 0)
            return 0;
    }
    return 1;
}

static void do_allocations(mock_t *m, mh_req_t *r)
{
    json_t *list = json_array(), *a, *want = json_object();
    const char *id;
    int64_t now = gt_clock_mono_ms();

    mh_query_args(r, collect_label, want);
    pthread_mutex_lock(&m->mu);
    json_object_foreach (m->allocs, id, a) {
        if (!labels_match(a, want))
            continue;
        json_array_append_new(
            list, json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:I}", "allocation_id", id, "pool_id",
                            json_object_get(a, "pool_id"), "tflops", json_object_get(a, "tflops"),
                            "vram_mb", json_object_get(a, "vram_mb"), "model",
                            json_object_get(a, "model"), "labels", json_object_get(a, "labels"),
                            "created_at", json_object_get(a, "created_at"), "age_ms",
                            (json_int_t)(now - json_integer_value(json_object_get(a, "_t0")))));
    }
    pthread_mutex_unlock(&m->mu);
    json_decref(want);
    set_json(r, 200, json_pack("{s:o}", "allocations", list));
}

static void do_stats(mock_t *m, mh_req_t *r)
{
    json_t *j;

    pthread_mutex_lock(&m->mu);
    j = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
        "s:f,s:I,s:f,s:I,s:I,s:I}",
        "outstanding_allocations", (json_int_t)json_object_size(m->allocs), "allocations_total",
        (json_int_t)m->allocations_total, "releases_total", (json_int_t)m->releases_total,
        "inference_ok", (json_int_t)m->inference_ok, "inference_failed",
        (json_int_t)m->inference_failed, "faults_injected", endpoint_names[EP_ALLOCATE],
        (json_int_t)m->faults[EP_ALLOCATE], endpoint_names[EP_INFERENCE],
        (json_int_t)m->faults[EP_INFERENCE], endpoint_names[EP_RELEASE],
        (json_int_t)m->faults[EP_RELEASE], "total",
        (json_int_t)(m->faults[0] + m->faults[1] + m->faults[2]), "rejected_capacity",
        (json_int_t)(m->rejected_too_large + m->rejected_full), "rejected_too_large",
        (json_int_t)m->rejected_too_large, "rejected_pool_full", (json_int_t)m->rejected_full,
        "unauthorized", (json_int_t)m->unauthorized, "requests_total",
        (json_int_t)m->requests_total, "peak_concurrent_requests", (json_int_t)m->peak_concurrent,
        "concurrent_requests", (json_int_t)m->concurrent, "used_tflops", m->used_mtflops / 1000.0,
        "used_vram_mb", (json_int_t)m->used_vram_mb, "capacity_tflops", m->o.cap_tflops,
        "capacity_vram_mb", (json_int_t)m->o.cap_vram_mb, "connections_total",
        (json_int_t)m->connections_total, "connections_open", (json_int_t)m->connections_open);
    if (j)
        json_object_set_new(j, "releases_refused", json_integer((json_int_t)m->releases_refused));
    pthread_mutex_unlock(&m->mu);
    set_json(r, 200, j);
}

static void do_stats_reset(mock_t *m, mh_req_t *r)
{
    pthread_mutex_lock(&m->mu);
    /* Outstanding allocations and capacity in use are state, not counters. */
    m->allocations_total = m->releases_total = 0;
    m->inference_ok = m->inference_failed = 0;
    memset(m->faults, 0, sizeof(m->faults));
    m->rejected_too_large = m->rejected_full = m->unauthorized = 0;
    m->requests_total = m->connections_total = 0;
    m->peak_concurrent = m->concurrent;
    pthread_mutex_unlock(&m->mu);
    set_json(r, HTTP_NO_CONTENT, NULL);
}

static int authorized(mock_t *m, mh_req_t *r)
{
    const char *v = mh_header(r, "Authorization");
    size_t klen = strlen(m->o.api_key);
    unsigned char diff = 0;

    if (!v || strncmp(v, "Bearer ", 7) != 0 || strlen(v + 7) != klen)
        return 0;
    /* Constant time over the key, out of habit. */
    for (size_t i = 0; i < klen; i++)
        diff |= (unsigned char)(v[7 + i] ^ m->o.api_key[i]);
    return diff == 0;
}

#define MOCK_MAX_TRACE_IDS 10000

/* Counts the trace id of a W3C traceparent header, so tests can check propagation. */
static void note_traceparent(mock_t *m, mh_req_t *r)
{
    const char *tp = mh_header(r, "traceparent");
    char id[33];
    if (!tp || strlen(tp) != 55 || tp[2] != '-' || tp[35] != '-')
        return;
    memcpy(id, tp + 3, 32);
    id[32] = 0;
    pthread_mutex_lock(&m->mu);
    json_t *n = json_object_get(m->trace_ids, id);
    if (n)
        json_integer_set(n, json_integer_value(n) + 1);
    else if (json_object_size(m->trace_ids) < MOCK_MAX_TRACE_IDS)
        json_object_set_new(m->trace_ids, id, json_integer(1));
    pthread_mutex_unlock(&m->mu);
}

static void do_trace_ids(mock_t *m, mh_req_t *r)
{
    pthread_mutex_lock(&m->mu);
    json_t *j = json_pack("{s:o}", "trace_ids", json_deep_copy(m->trace_ids));
    pthread_mutex_unlock(&m->mu);
    set_json(r, 200, j);
}

/* The handler of every request (mockhttp.h). */
static void route(void *ctx, mh_req_t *r, const char *method, const char *url, const char *body,
                  size_t len)
{
    mock_t *m = ctx;
    int post = strcmp(method, "POST") == 0;
    uint64_t rng;

    pthread_mutex_lock(&m->mu);
    /* One generator per request, seeded from --seed and the request's number:
     * the same run of requests sees the same faults/latencies. */
    rng = m->o.seed ^ (++m->seq * 0x9e3779b97f4a7c15ULL);
    pthread_mutex_unlock(&m->mu);
    if (!authorized(m, r)) {
        pthread_mutex_lock(&m->mu);
        m->unauthorized++;
        pthread_mutex_unlock(&m->mu);
        set_error(r, 401, "unauthorized", "missing or invalid API key");
        return;
    }
    note_traceparent(m, r);
    if (strcmp(url, "/v1/allocate") == 0 && post)
        do_allocate(m, r, &rng, body, len);
    else if (strncmp(url, "/v1/allocate/", 13) == 0 && url[13] && strcmp(method, "DELETE") == 0)
        do_release(m, r, &rng, url + 13);
    else if (strcmp(url, "/v1/inference") == 0 && post)
        do_inference(m, r, &rng, body, len);
    else if (strcmp(url, "/v1/allocations") == 0 && strcmp(method, "GET") == 0)
        do_allocations(m, r);
    else if (strcmp(url, "/v1/stats") == 0 && strcmp(method, "GET") == 0)
        do_stats(m, r);
    else if (strcmp(url, "/v1/trace-ids") == 0 && strcmp(method, "GET") == 0)
        do_trace_ids(m, r);
    else if (strcmp(url, "/v1/stats/reset") == 0 && post)
        do_stats_reset(m, r);
    else if (strcmp(url, "/v1/allocate") == 0 || strncmp(url, "/v1/allocate/", 13) == 0 ||
             strcmp(url, "/v1/inference") == 0 || strcmp(url, "/v1/allocations") == 0 ||
             strncmp(url, "/v1/stats", 9) == 0)
        set_error(r, 405, "method_not_allowed", "method not allowed on this path");
    else
        set_error(r, 404, "not_found", "no such endpoint");
}

/* ---- request and connection counts -------------------------------------- */

/* A request counts as concurrent from its headers to its end (mockhttp.h). */
static void request_begun(void *ctx, mh_req_t *r)
{
    mock_t *m = ctx;

    (void)r;
    pthread_mutex_lock(&m->mu);
    m->requests_total++;
    if (++m->concurrent > m->peak_concurrent)
        m->peak_concurrent = m->concurrent;
    pthread_mutex_unlock(&m->mu);
}

static void request_done(void *ctx, mh_req_t *r)
{
    mock_t *m = ctx;

    (void)r;
    pthread_mutex_lock(&m->mu);
    m->concurrent--;
    pthread_mutex_unlock(&m->mu);
}

static void on_connection(void *ctx, int opened)
{
    mock_t *m = ctx;

    pthread_mutex_lock(&m->mu);
    if (opened) {
        m->connections_total++;
        m->connections_open++;
    } else {
        m->connections_open--;
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---- main -------------------------------------------------------------- */

static void parse_args(int argc, char **argv, mock_opts_t *o)
{
    enum {
        O_PORT = 1,
        O_BIND,
        O_KEY,
        O_LAT,
        O_ALAT,
        O_FAIL,
        O_TF,
        O_VRAM,
        O_SEED,
        O_THR,
        O_HELP,
        O_RFAIL
    };
    static const struct option longs[] = {
        {"port", required_argument, NULL, O_PORT},
        {"bind", required_argument, NULL, O_BIND},
        {"api-key", required_argument, NULL, O_KEY},
        {"latency-ms", required_argument, NULL, O_LAT},
        {"alloc-latency-ms", required_argument, NULL, O_ALAT},
        {"fail-rate", required_argument, NULL, O_FAIL},
        {"capacity-tflops", required_argument, NULL, O_TF},
        {"vram-mb", required_argument, NULL, O_VRAM},
        {"seed", required_argument, NULL, O_SEED},
        {"threads", required_argument, NULL, O_THR},
        {"help", no_argument, NULL, O_HELP},
        {"release-fail-ms", required_argument, NULL, O_RFAIL},
        {NULL, 0, NULL, 0},
    };
    int c, have_port = 0;
    uint64_t u;
    struct in_addr addr;

    memset(o, 0, sizeof(*o));
    o->bind = "127.0.0.1";
    o->lat_min = 5;
    o->lat_max = 20;
    o->cap_tflops = 1000;
    o->cap_vram_mb = 640000;
    o->seed = 42;
    o->threads = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case O_PORT:
            if (mc_parse_u64(optarg, &u) || u > 65535)
                mc_die_usage(PROG, "--port: expected 0..65535, got '%s'", optarg);
            o->port = (int)u;
            have_port = 1;
            break;
        case O_BIND:
            if (inet_pton(AF_INET, optarg, &addr) != 1)
                mc_die_usage(PROG, "--bind: expected an IPv4 address, got '%s'", optarg);
            o->bind = optarg;
            break;
        case O_KEY: o->api_key = optarg; break;
        case O_LAT:
            if (mc_parse_range(optarg, &o->lat_min, &o->lat_max))
                mc_die_usage(PROG, "--latency-ms: expected A-B with 0 <= A <= B, got '%s'", optarg);
            break;
        case O_ALAT:
            if (mc_parse_range(optarg, &o->alloc_lat_min, &o->alloc_lat_max))
                mc_die_usage(PROG, "--alloc-latency-ms: expected A-B with 0 <= A <= B, got '%s'",
                             optarg);
            break;
        case O_FAIL:
            if (mc_parse_double(optarg, &o->fail_rate) || o->fail_rate < 0 || o->fail_rate > 1)
                mc_die_usage(PROG, "--fail-rate: expected a probability 0..1, got '%s'", optarg);
            break;
        case O_TF:
            if (mc_parse_double(optarg, &o->cap_tflops) || o->cap_tflops < 0 || o->cap_tflops > 1e9)
                mc_die_usage(PROG, "--capacity-tflops: expected a number >= 0, got '%s'", optarg);
            break;
        case O_VRAM:
            if (mc_parse_u64(optarg, &u) || u > (uint64_t)INT64_MAX / 2)
                mc_die_usage(PROG, "--vram-mb: expected an integer >= 0, got '%s'", optarg);
            o->cap_vram_mb = (int64_t)u;
            break;
        case O_SEED:
            if (mc_parse_u64(optarg, &o->seed))
                mc_die_usage(PROG, "--seed: expected an unsigned integer, got '%s'", optarg);
            break;
        case O_THR:
            if (mc_parse_u64(optarg, &u) || u < 1 || u > 64)
                mc_die_usage(PROG, "--threads: expected 1..64, got '%s'", optarg);
            o->threads = (unsigned)u;
            break;
        case O_RFAIL:
            if (mc_parse_u64(optarg, &u) || u > 86400000)
                mc_die_usage(PROG, "--release-fail-ms: expected 0..86400000, got '%s'", optarg);
            o->release_fail_ms = (int64_t)u;
            break;
        case O_HELP: usage(stdout); exit(0);
        default: mc_die_bad_option(PROG, longs, argv);
        }
    }
    mc_check_operands(PROG, argc, argv, have_port);
    if (!o->api_key || !*o->api_key)
        o->api_key = getenv("GANTRY_MOCK_API_KEY");
    if (!o->api_key || !*o->api_key)
        mc_die_usage(PROG, "an API key is required: --api-key K or GANTRY_MOCK_API_KEY");
}

int main(int argc, char **argv)
{
    mock_t m;
    mock_opts_t o;
    mh_server_t *srv = NULL;
    unsigned port = 0;
    int rc = 1;
    sigset_t set;

    parse_args(argc, argv, &o);
    gt_log_init(PROG, GT_LOG_INFO);
    memset(&m, 0, sizeof(m));
    m.o = o;
    m.started_ms = gt_clock_mono_ms();
    m.cap_mtflops = llround(m.o.cap_tflops * 1000);
    m.allocs = json_object();
    m.trace_ids = json_object();
    pthread_mutex_init(&m.mu, NULL);
    if (!m.allocs || !m.trace_ids)
        goto out;

    mc_block_signals(&set); /* every thread inherits the mask: sigwait below */
    mh_config_t hc = {
        .bind = m.o.bind,
        .port = m.o.port,
        .threads = m.o.threads,
        .handler = route,
        .begun = request_begun,
        .done = request_done,
        .connection = on_connection,
        .ctx = &m,
        .max_body = MAX_BODY,
        .handler_sees_too_big = 1, /* 413 only where a body is read, after the key */
    };
    if (!(srv = mh_start(&hc, &port))) {
        fprintf(stderr, PROG ": cannot start the server\n");
        goto out;
    }
    printf("listening=%s:%u\n", m.o.bind, port);
    fflush(stdout);
    gt_info("mock HostedAI listening on %s:%u (capacity %.1f TFLOPS, %" PRId64
            " MB VRAM, latency %d-%d ms, fail rate %.3f)",
            m.o.bind, port, m.o.cap_tflops, m.o.cap_vram_mb, m.o.lat_min, m.o.lat_max,
            m.o.fail_rate);
    gt_info("signal %d: stopping", mc_wait_signal(&set));
    {
        /* What a benchmark needs to tell the mock's time from its clients'. */
        json_t *st = mh_server_stats(srv);
        pthread_mutex_lock(&m.mu);
        gt_info("served %" PRIu64 " requests on %" PRIu64
                " connections; delayed replies queued late by %.1f ms on average, %" PRId64
                " ms at most",
                m.requests_total, m.connections_total,
                json_real_value(json_object_get(st, "reply_late_avg_ms")),
                (int64_t)json_integer_value(json_object_get(st, "reply_late_max_ms")));
        pthread_mutex_unlock(&m.mu);
        json_decref(st);
    }
    rc = 0;

out:
    mh_stop(srv); /* answers every parked request first */
    pthread_mutex_destroy(&m.mu);
    json_decref(m.allocs);
    json_decref(m.trace_ids);
    return rc;
}
