/* mock_openai.c - gantry-mock-openai: an OpenAI-compatible server over loopback
 * for tests and benchmarks: /v1/chat/completions, /v1/completions and
 * /v1/embeddings with deterministic text and realistic usage counts,
 * /v1/moderations with scores set by markers in the input, latency,
 * injected statuses (with Retry-After), GET /v1/stats with the peak of
 * concurrent requests and the last request seen, and an admin switch that
 * forces failures on or off at run time (POST /admin/fail {"status": 503}). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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

#define PROG "gantry-mock-openai"
#define MAX_MIX 8
#define EMBED_DIM 8

typedef struct opts {
    const char *bind;
    int port;
    const char *api_key; /* NULL: any key (or none) accepted */
    int lat_min, lat_max;
    double fail_rate;
    struct {
        unsigned status;
        double p;
    } mix[MAX_MIX];
    int n_mix;
    int retry_after; /* seconds on 429/503, -1: no header */
    uint64_t seed;
    unsigned threads;
} opts_t;

enum { TAG_API = 1 };

typedef struct mock {
    opts_t o;
    pthread_mutex_t mu; /* everything below */
    uint64_t seq, requests_total, ok, failed, unauthorized, bad_request;
    uint64_t chat, completions, embeddings, moderations;
    uint64_t concurrent, peak_concurrent;
    uint64_t prompt_tokens, completion_tokens;
    unsigned forced_status; /* admin switch, 0: off */
    json_t *last;           /* last API request: path, body, headers that matter */
    mh_server_t *srv;       /* set once listening: its timing goes into /v1/stats */
} mock_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --port P [options]\n"
            "\n"
            "An OpenAI-compatible server for tests: /v1/chat/completions, /v1/completions,\n"
            "/v1/embeddings, /v1/moderations, GET /v1/stats, POST /admin/fail {\"status\": N}\n"
            "(0: off), POST /admin/reset. /v1/moderations scores a category 0.93 when the\n"
            "input holds the marker [flag:CATEGORY] (e.g. [flag:hate/threatening]), else\n"
            "near 0: tests choose the verdict, no text is judged.\n"
            "\n"
            "  --port P               port (0: any free port)\n"
            "  --bind ADDR            IPv4 address (default 127.0.0.1)\n"
            "  --latency-ms A-B       answer latency, uniform in A..B ms (default 5-20)\n"
            "  --fail-rate R          fraction of requests answered 500 or 503 (default 0)\n"
            "  --status-mix S:P,...   fractions answered with status S, e.g. 429:0.05,503:0.05\n"
            "  --retry-after S        Retry-After seconds on 429 and 503 answers (default none)\n"
            "  --api-key K            require \"Authorization: Bearer K\" (default: not checked)\n"
            "  --seed N               random seed (default 42)\n"
            "  --threads N            server threads (default 1)\n"
            "  --help                 this help\n"
            "\n"
            "Prints \"listening=ADDR:PORT\" when ready; stops on SIGINT/SIGTERM.\n");
}

/* About four characters per token, as for English with BPE tokenizers. */
static int64_t tokens_of(size_t chars)
{
    return chars == 0 ? 0 : (int64_t)((chars + 3) / 4);
}

static const char *const words[] = {
    "gantry", "routes", "requests", "through", "kafka", "and",    "workers",  "answer",
    "with",   "care",   "every",    "task",    "finds", "its",    "provider", "quickly",
    "tokens", "flow",   "like",     "water",   "over",  "stones", "the",      "queue",
};

/* Deterministic text of n words, seeded by the prompt. */
static char *make_text(uint64_t seed, int64_t n)
{
    size_t cap = (size_t)n * 12 + 1, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (int64_t i = 0; i < n; i++) {
        const char *w = words[gt_rand_next(&seed) % (sizeof(words) / sizeof(words[0]))];
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? " " : "", w);
    }
    return s;
}

static int64_t max_tokens_of(json_t *body, int64_t def)
{
    json_t *v = json_object_get(body, "max_tokens");
    int64_t m = json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
    return m < 1 ? 1 : m > 512 ? 512 : m;
}

static json_t *usage_json(int64_t prompt, int64_t completion)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

/* The moderation categories of OpenAI's /v1/moderations. */
static const char *const mod_categories[] = {"harassment",
                                             "harassment/threatening",
                                             "hate",
                                             "hate/threatening",
                                             "illicit",
                                             "illicit/violent",
                                             "self-harm",
                                             "self-harm/intent",
                                             "self-harm/instructions",
                                             "sexual",
                                             "sexual/minors",
                                             "violence",
                                             "violence/graphic"};

/* One result of /v1/moderations: a category is flagged when the text holds
 * the marker "[flag:CATEGORY]". */
static json_t *moderation_result(const char *text)
{
    json_t *cats = json_object(), *scores = json_object();
    int flagged = 0;
    uint64_t seed = gt_rand_seed_of(text, strlen(text));
    for (size_t i = 0; i < sizeof(mod_categories) / sizeof(mod_categories[0]); i++) {
        char marker[64];
        snprintf(marker, sizeof(marker), "[flag:%s]", mod_categories[i]);
        int hit = strstr(text, marker) != NULL;
        flagged |= hit;
        json_object_set_new(cats, mod_categories[i], json_boolean(hit));
        json_object_set_new(scores, mod_categories[i],
                            json_real(hit ? 0.93 : round(gt_rand_unit_r(&seed) * 1e3) / 1e6));
    }
    return json_pack("{s:b, s:o, s:o}", "flagged", flagged, "categories", cats, "category_scores",
                     scores);
}

/* Answers an API call; returns 0 and the counts, or -1 (r holds a 400). */
static int answer(mock_t *m, mh_req_t *r, const char *url, json_t *body, int64_t *pt, int64_t *ct)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    char id[64];
    snprintf(id, sizeof(id), "mock-%" PRIu64, (uint64_t)gt_clock_wall_ms());
    if (!model) {
        mh_reply_error(r, 400, "invalid_request_error", "model is required");
        return -1;
    }
    if (strcmp(url, "/v1/moderations") == 0) {
        json_t *input = json_object_get(body, "input");
        json_t *list = json_is_string(input) ? json_pack("[O]", input) : json_incref(input);
        json_t *results = json_array(), *s;
        size_t i;
        int ok = json_is_array(list) && json_array_size(list) > 0;
        json_array_foreach (list, i, s) {
            if (!json_is_string(s))
                ok = 0;
            else
                json_array_append_new(results, moderation_result(json_string_value(s)));
        }
        json_decref(list);
        if (!ok) {
            json_decref(results);
            mh_reply_error(r, 400, "invalid_request_error",
                           "input must be a string or an array of strings");
            return -1;
        }
        *pt = *ct = 0; /* moderation is not counted in tokens */
        mh_reply_json(r, 200,
                      json_pack("{s:s, s:s, s:o}", "id", id, "model", model, "results", results));
        return 0;
    }
    if (strcmp(url, "/v1/embeddings") == 0) {
        json_t *input = json_object_get(body, "input");
        json_t *list = json_is_string(input) ? json_pack("[O]", input) : json_incref(input);
        size_t i;
        json_t *s, *data = json_array();
        size_t chars = 0;
        if (!json_is_array(list) || json_array_size(list) == 0) {
            json_decref(list);
            json_decref(data);
            mh_reply_error(r, 400, "invalid_request_error", "input must be a string or array");
            return -1;
        }
        json_array_foreach (list, i, s) {
            const char *t = json_string_value(s);
            size_t n = t ? strlen(t) : 0;
            uint64_t seed = gt_rand_seed_of(t ? t : "", n);
            json_t *vec = json_array();
            for (int d = 0; d < EMBED_DIM; d++)
                json_array_append_new(
                    vec, json_real(round((gt_rand_unit_r(&seed) * 2 - 1) * 1e6) / 1e6));
            json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index",
                                                  (int)i, "embedding", vec));
            chars += n;
        }
        json_decref(list);
        *pt = tokens_of(chars);
        *ct = 0;
        mh_reply_json(r, 200,
                      json_pack("{s:s, s:o, s:s, s:o}", "object", "list", "data", data, "model",
                                model, "usage", usage_json(*pt, 0)));
        return 0;
    }
    int chat = strcmp(url, "/v1/chat/completions") == 0;
    size_t chars = 0;
    uint64_t seed = 0x5eed;
    if (chat) {
        json_t *msgs = json_object_get(body, "messages"), *msg;
        size_t i;
        if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
            mh_reply_error(r, 400, "invalid_request_error", "messages must be a non-empty array");
            return -1;
        }
        json_array_foreach (msgs, i, msg) {
            const char *c = json_string_value(json_object_get(msg, "content"));
            if (!c || !json_is_string(json_object_get(msg, "role"))) {
                mh_reply_error(r, 400, "invalid_request_error",
                               "each message needs role and content");
                return -1;
            }
            chars += strlen(c) + 4; /* role and separators cost a few tokens */
            seed ^= gt_rand_seed_of(c, strlen(c));
        }
    } else {
        const char *p = json_string_value(json_object_get(body, "prompt"));
        if (!p) {
            mh_reply_error(r, 400, "invalid_request_error", "prompt must be a string");
            return -1;
        }
        chars = strlen(p);
        seed ^= gt_rand_seed_of(p, chars);
    }
    int64_t max = max_tokens_of(body, 16);
    int64_t n = 3 + (int64_t)(seed % 14);
    const char *finish = "stop";
    if (n > max) {
        n = max;
        finish = "length";
    }
    char *text = make_text(seed, n);
    *pt = tokens_of(chars);
    *ct = n;
    json_t *choice =
        chat ? json_pack("{s:i, s:{s:s, s:s}, s:s}", "index", 0, "message", "role", "assistant",
                         "content", text ? text : "", "finish_reason", finish)
             : json_pack("{s:i, s:s, s:s}", "index", 0, "text", text ? text : "", "finish_reason",
                         finish);
    free(text);
    mh_reply_json(r, 200,
                  json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", id, "object",
                            chat ? "chat.completion" : "text_completion", "created",
                            (json_int_t)(gt_clock_wall_ms() / 1000), "model", model, "choices",
                            choice, "usage", usage_json(*pt, *ct)));
    return 0;
}

static void do_stats(mock_t *m, mh_req_t *r)
{
    pthread_mutex_lock(&m->mu);
    json_t *s = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:O?}",
        "requests_total", (json_int_t)m->requests_total, "ok", (json_int_t)m->ok, "failed",
        (json_int_t)m->failed, "unauthorized", (json_int_t)m->unauthorized, "bad_request",
        (json_int_t)m->bad_request, "chat", (json_int_t)m->chat, "completions",
        (json_int_t)m->completions, "embeddings", (json_int_t)m->embeddings, "moderations",
        (json_int_t)m->moderations, "concurrent", (json_int_t)m->concurrent, "peak_concurrent",
        (json_int_t)m->peak_concurrent, "prompt_tokens", (json_int_t)m->prompt_tokens,
        "completion_tokens", (json_int_t)m->completion_tokens, "forced_status",
        (int)m->forced_status, "last_request", m->last);
    mh_server_t *srv = m->srv;
    pthread_mutex_unlock(&m->mu);
    if (s)
        json_object_set_new(s, "server", mh_server_stats(srv));
    mh_reply_json(r, 200, s);
}

static void do_admin(mock_t *m, mh_req_t *r, const char *url, json_t *body)
{
    if (strcmp(url, "/admin/fail") == 0) {
        json_t *st = json_object_get(body, "status");
        if (!json_is_integer(st) ||
            (json_integer_value(st) != 0 &&
             (json_integer_value(st) < 400 || json_integer_value(st) > 599))) {
            mh_reply_error(r, 400, "invalid_request_error", "status must be 0 or 400..599");
            return;
        }
        pthread_mutex_lock(&m->mu);
        m->forced_status = (unsigned)json_integer_value(st);
        pthread_mutex_unlock(&m->mu);
        gt_info("admin: forced status %u", (unsigned)json_integer_value(st));
        mh_reply_json(r, 200, json_pack("{s:i}", "forced_status", (int)json_integer_value(st)));
        return;
    }
    if (strcmp(url, "/admin/reset") == 0) {
        pthread_mutex_lock(&m->mu);
        m->requests_total = m->ok = m->failed = m->unauthorized = m->bad_request = 0;
        m->chat = m->completions = m->embeddings = m->moderations = 0;
        m->peak_concurrent = m->concurrent;
        m->prompt_tokens = m->completion_tokens = 0;
        json_decref(m->last);
        m->last = NULL;
        pthread_mutex_unlock(&m->mu);
        mh_reply_json(r, 200, json_object());
        return;
    }
    mh_reply_error(r, 404, "not_found", "no such admin endpoint");
}

static int authorized(mock_t *m, mh_req_t *r)
{
    if (!m->o.api_key)
        return 1;
    const char *v = mh_header(r, "Authorization");
    return v && strncmp(v, "Bearer ", 7) == 0 && strcmp(v + 7, m->o.api_key) == 0;
}

static void handle(void *ctx, mh_req_t *r, const char *method, const char *url, const char *body,
                   size_t len)
{
    mock_t *m = ctx;
    json_t *doc = body ? gt_json_parse(body, len, 0, NULL) : NULL;
    if (strcmp(method, "GET") == 0 && strcmp(url, "/v1/stats") == 0) {
        do_stats(m, r);
        goto out;
    }
    if (strcmp(method, "POST") == 0 && strncmp(url, "/admin/", 7) == 0) {
        do_admin(m, r, url, doc);
        goto out;
    }
    int api = strcmp(url, "/v1/chat/completions") == 0 || strcmp(url, "/v1/completions") == 0 ||
              strcmp(url, "/v1/embeddings") == 0 || strcmp(url, "/v1/moderations") == 0;
    if (!api || strcmp(method, "POST") != 0) {
        mh_reply_error(r, 404, "invalid_request_error", "unknown endpoint");
        goto out;
    }
    mh_set_tag(r, TAG_API);
    pthread_mutex_lock(&m->mu);
    uint64_t rng = m->o.seed ^ (++m->seq * 0x9e3779b97f4a7c15ULL);
    m->requests_total++;
    if (++m->concurrent > m->peak_concurrent)
        m->peak_concurrent = m->concurrent;
    unsigned forced = m->forced_status;
    json_decref(m->last);
    const char *tp = mh_header(r, "traceparent");
    const char *auth = mh_header(r, "Authorization");
    m->last = json_pack("{s:s, s:O?, s:b, s:s?, s:s?}", "path", url, "body", doc, "authorized",
                        authorized(m, r), "traceparent", tp, "content_type",
                        mh_header(r, "Content-Type"));
    (void)auth; /* never echoed back: it is a secret */
    pthread_mutex_unlock(&m->mu);

    int64_t lat =
        m->o.lat_min + (int64_t)(gt_rand_unit_r(&rng) * (m->o.lat_max - m->o.lat_min + 1));
    if (lat > m->o.lat_max)
        lat = m->o.lat_max;
    mh_set_delay(r, lat);
    unsigned status = forced;
    if (!status && m->o.fail_rate > 0 && gt_rand_unit_r(&rng) < m->o.fail_rate)
        status = gt_rand_next(&rng) % 2 ? 503 : 500;
    if (!status && m->o.n_mix) {
        double u = gt_rand_unit_r(&rng), acc = 0;
        for (int i = 0; i < m->o.n_mix && !status; i++)
            if (u < (acc += m->o.mix[i].p))
                status = m->o.mix[i].status;
    }
    int64_t pt = 0, ct = 0;
    if (!authorized(m, r)) {
        mh_reply_error(r, 401, "invalid_request_error", "Incorrect API key provided");
        mh_set_delay(r, 0);
        pthread_mutex_lock(&m->mu);
        m->unauthorized++;
        pthread_mutex_unlock(&m->mu);
    } else if (status) {
        char msg[64];
        snprintf(msg, sizeof(msg), "injected status %u", status);
        mh_reply_error(r, status, status == 429 ? "rate_limit_error" : "server_error", msg);
        if ((status == 429 || status == 503) && m->o.retry_after >= 0)
            mh_set_retry_after(r, m->o.retry_after);
        pthread_mutex_lock(&m->mu);
        m->failed++;
        pthread_mutex_unlock(&m->mu);
    } else if (!json_is_object(doc)) {
        mh_reply_error(r, 400, "invalid_request_error", "body must be a JSON object");
        pthread_mutex_lock(&m->mu);
        m->bad_request++;
        pthread_mutex_unlock(&m->mu);
    } else {
        int rc = answer(m, r, url, doc, &pt, &ct);
        pthread_mutex_lock(&m->mu);
        if (rc == 0) {
            m->ok++;
            m->prompt_tokens += (uint64_t)pt;
            m->completion_tokens += (uint64_t)ct;
            if (strcmp(url, "/v1/chat/completions") == 0)
                m->chat++;
            else if (strcmp(url, "/v1/completions") == 0)
                m->completions++;
            else if (strcmp(url, "/v1/embeddings") == 0)
                m->embeddings++;
            else
                m->moderations++;
        } else {
            m->bad_request++;
        }
        pthread_mutex_unlock(&m->mu);
    }
out:
    json_decref(doc);
}

/* A request stops counting as concurrent when its answer goes out. */
static void replied(void *ctx, mh_req_t *r)
{
    mock_t *m = ctx;
    if (mh_tag(r) != TAG_API)
        return;
    mh_set_tag(r, 0);
    pthread_mutex_lock(&m->mu);
    m->concurrent--;
    pthread_mutex_unlock(&m->mu);
}

static int parse_prob(const char *s, double *p)
{
    return mc_parse_double(s, p) || !(*p >= 0 && *p <= 1) ? -1 : 0;
}

static void parse_mix(const char *arg, opts_t *o)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", arg);
    double total = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':'), *end;
        if (!colon || o->n_mix == MAX_MIX)
            mc_die_usage(PROG, "--status-mix: expected STATUS:P[,STATUS:P...], got '%s'", arg);
        *colon = '\0';
        long st = strtol(tok, &end, 10);
        if (*end || st < 400 || st > 599)
            mc_die_usage(PROG, "--status-mix: status must be 400..599, got '%s'", tok);
        if (parse_prob(colon + 1, &o->mix[o->n_mix].p))
            mc_die_usage(PROG, "--status-mix: fraction must be 0..1, got '%s'", colon + 1);
        o->mix[o->n_mix].status = (unsigned)st;
        total += o->mix[o->n_mix++].p;
    }
    if (o->n_mix == 0 || total > 1)
        mc_die_usage(PROG, "--status-mix: fractions must add up to at most 1, got '%s'", arg);
}

static void parse_args(int argc, char **argv, opts_t *o)
{
    enum { O_PORT = 1, O_BIND, O_KEY, O_LAT, O_FAIL, O_MIX, O_RA, O_SEED, O_THR, O_HELP };
    static const struct option longs[] = {
        {"port", required_argument, NULL, O_PORT},
        {"bind", required_argument, NULL, O_BIND},
        {"api-key", required_argument, NULL, O_KEY},
        {"latency-ms", required_argument, NULL, O_LAT},
        {"fail-rate", required_argument, NULL, O_FAIL},
        {"status-mix", required_argument, NULL, O_MIX},
        {"retry-after", required_argument, NULL, O_RA},
        {"seed", required_argument, NULL, O_SEED},
        {"threads", required_argument, NULL, O_THR},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c, have_port = 0;
    char *end;
    memset(o, 0, sizeof(*o));
    o->bind = "127.0.0.1";
    o->lat_min = 5;
    o->lat_max = 20;
    o->retry_after = -1;
    o->seed = 42;
    o->threads = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        long v;
        switch (c) {
        case O_PORT:
            v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || v < 0 || v > 65535)
                mc_die_usage(PROG, "--port: expected 0..65535, got '%s'", optarg);
            o->port = (int)v;
            have_port = 1;
            break;
        case O_BIND: o->bind = optarg; break;
        case O_KEY: o->api_key = *optarg ? optarg : NULL; break;
        case O_LAT:
            if (mc_parse_range(optarg, &o->lat_min, &o->lat_max))
                mc_die_usage(PROG, "--latency-ms: expected A-B with 0 <= A <= B, got '%s'", optarg);
            break;
        case O_FAIL:
            if (parse_prob(optarg, &o->fail_rate))
                mc_die_usage(PROG, "--fail-rate: expected a probability 0..1, got '%s'", optarg);
            break;
        case O_MIX: parse_mix(optarg, o); break;
        case O_RA:
            v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || v < 0 || v > 3600)
                mc_die_usage(PROG, "--retry-after: expected seconds 0..3600, got '%s'", optarg);
            o->retry_after = (int)v;
            break;
        case O_SEED:
            o->seed = strtoull(optarg, &end, 10);
            if (*optarg == '\0' || *end)
                mc_die_usage(PROG, "--seed: expected an unsigned integer, got '%s'", optarg);
            break;
        case O_THR:
            v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || v < 1 || v > 64)
                mc_die_usage(PROG, "--threads: expected 1..64, got '%s'", optarg);
            o->threads = (unsigned)v;
            break;
        case O_HELP: usage(stdout); exit(0);
        default: mc_die_bad_option(PROG, longs, argv);
        }
    }
    mc_check_operands(PROG, argc, argv, have_port);
}

int main(int argc, char **argv)
{
    static mock_t m;
    sigset_t set;
    unsigned port = 0;
    parse_args(argc, argv, &m.o);
    gt_log_init(PROG, GT_LOG_INFO);
    pthread_mutex_init(&m.mu, NULL);
    mc_block_signals(&set); /* every thread inherits the mask: sigwait below */
    mh_config_t hc = {
        .bind = m.o.bind,
        .port = m.o.port,
        .threads = m.o.threads,
        .handler = handle,
        .replied = replied,
        .ctx = &m,
    };
    mh_server_t *s = mh_start(&hc, &port);
    if (!s) {
        fprintf(stderr, PROG ": cannot start the server\n");
        return 1;
    }
    pthread_mutex_lock(&m.mu);
    m.srv = s;
    pthread_mutex_unlock(&m.mu);
    printf("listening=%s:%u\n", m.o.bind, port);
    fflush(stdout);
    gt_info("mock OpenAI listening on %s:%u (latency %d-%d ms, fail rate %.3f, %d status mix)",
            m.o.bind, port, m.o.lat_min, m.o.lat_max, m.o.fail_rate, m.o.n_mix);
    gt_info("signal %d: stopping", mc_wait_signal(&set));
    mh_stop(s);
    json_decref(m.last);
    pthread_mutex_destroy(&m.mu);
    return 0;
}
