/* dlq.c - `gantry dlq list|replay`: read dead letters (gantry.dlq.v1) and re-publish chosen
 * ones, with their original key and bytes, to the topic they came from. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "cli.h"
#include "clock.h"
#include "json_text.h"
#include "kafka.h"
#include "log.h"
#include "message.h"

#define DLQ_TIMEOUT_MS 30000
#define MAX_PICKS 1024

/* Which entries a command applies to: every filter given must match. */
typedef struct filter {
    const char *code, *stage, *source;
    struct pick {
        int32_t partition; /* -1: any partition */
        int64_t offset;
    } picks[MAX_PICKS];
    int n_picks;
} filter_t;

typedef struct scan {
    const filter_t *f;
    const char *cmd;
    int as_json, dry_run;
    const char *to;       /* replay: override the destination topic */
    rd_kafka_t *producer; /* replay */
    long matched, skipped, queued, delivered, failed;
} scan_t;

static void dlq_usage(FILE *f)
{
    fprintf(f, "usage: gantry dlq list   [--config FILE] [filters] [--json]\n"
               "       gantry dlq replay [--config FILE] filters [--to TOPIC] [--dry-run]\n"
               "\n"
               "list prints the dead letters now in the DLQ topic (topics.dlq): entry id\n"
               "(PARTITION:OFFSET in the DLQ), when it failed, error code, stage, source\n"
               "topic[partition]@offset, request_id and the reason. --json prints each\n"
               "entry as stored, one per line, with its \"dlq\" position added.\n"
               "\n"
               "replay re-publishes the chosen entries' original bytes, with their original\n"
               "key, to their source topic (or --to), after the cause was fixed. Replaying\n"
               "twice is harmless: the dispatcher dedupes requests by request_id. replay\n"
               "needs at least one filter; --dry-run prints what it would send.\n"
               "\n"
               "Filters:\n"
               "  -o, --offset [P:]O  the entry at DLQ partition P (default any), offset O;\n"
               "                      repeat for more entries\n"
               "  -C, --code CODE     entries with this error code (invalid_json, ...)\n"
               "  -s, --stage STAGE   entries failed at this stage (intake.validate, ...)\n"
               "  -S, --source TOPIC  entries that came from this topic\n"
               "Other options:\n"
               "  -c, --config FILE   configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -t, --to TOPIC      replay: publish here instead of the source topic\n"
               "  -n, --dry-run       replay: print, do not publish\n"
               "  -j, --json          list: JSON lines\n"
               "  -T, --timeout-ms N  give up after N ms (default 30000)\n"
               "  -h, --help          this help\n");
}

static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - gt_clock_mono_ms();
    return left < 0 ? 0 : left > 1000000000 ? 1000000000 : (int)left;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 4)
        gt_warn("kafka: %s: %s", fac, buf);
    else
        gt_debug("kafka: %s: %s", fac, buf);
}

static int parse_pick(const char *s, struct pick *p)
{
    const char *colon = strchr(s, ':');
    long long part = -1, off;
    if (colon) {
        char buf[32];
        size_t n = (size_t)(colon - s);
        if (n == 0 || n >= sizeof(buf))
            return -1;
        memcpy(buf, s, n);
        buf[n] = 0;
        if (gt_cli_parse_ms(buf, &part) != 0 || part > INT32_MAX)
            return -1;
        s = colon + 1;
    }
    if (gt_cli_parse_ms(s, &off) != 0)
        return -1;
    p->partition = (int32_t)part;
    p->offset = off;
    return 0;
}

static const char *str_at(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    return json_string_value(v);
}

static int matches(const filter_t *f, const rd_kafka_message_t *m, json_t *e)
{
    if (f->code &&
        (!str_at(e, "error", "code") || strcmp(str_at(e, "error", "code"), f->code) != 0))
        return 0;
    if (f->stage && (!str_at(e, "stage", NULL) || strcmp(str_at(e, "stage", NULL), f->stage) != 0))
        return 0;
    if (f->source &&
        (!str_at(e, "source", "topic") || strcmp(str_at(e, "source", "topic"), f->source) != 0))
        return 0;
    if (f->n_picks == 0)
        return 1;
    for (int i = 0; i < f->n_picks; i++)
        if ((f->picks[i].partition < 0 || f->picks[i].partition == m->partition) &&
            f->picks[i].offset == m->offset)
            return 1;
    return 0;
}

/* Keeps a one-line, printable reason (DLQ messages quote the input's text). */
static void one_line(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (; s && *s && n + 1 < len; s++)
        out[n++] = (*s == '\n' || *s == '\r' || *s == '\t') ? ' ' : *s;
    out[n] = 0;
}

static void list_entry(scan_t *sc, const rd_kafka_message_t *m, json_t *e)
{
    if (sc->as_json) {
        json_object_set_new(e, "dlq",
                            json_pack("{s:i, s:I}", "partition", (int)m->partition, "offset",
                                      (json_int_t)m->offset));
        char *s = json_dumps(e, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        return;
    }
    char pos[48], src[512], reason[160];
    const char *rid = str_at(e, "request_id", NULL);
    snprintf(pos, sizeof(pos), "%d:%lld", (int)m->partition, (long long)m->offset);
    snprintf(
        src, sizeof(src), "%s[%lld]@%lld",
        str_at(e, "source", "topic") ? str_at(e, "source", "topic") : "?",
        (long long)json_integer_value(json_object_get(json_object_get(e, "source"), "partition")),
        (long long)json_integer_value(json_object_get(json_object_get(e, "source"), "offset")));
    one_line(str_at(e, "error", "message"), reason, sizeof(reason));
    printf("%-10s %-24s %-20s %-18s %-28s %-24s %s\n", pos,
           str_at(e, "failed_at", NULL) ? str_at(e, "failed_at", NULL) : "-",
           str_at(e, "error", "code") ? str_at(e, "error", "code") : "-",
           str_at(e, "stage", NULL) ? str_at(e, "stage", NULL) : "-", src, rid ? rid : "-", reason);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    scan_t *sc = opaque;
    if (m->err) {
        sc->failed++;
        fprintf(stderr, "gantry dlq replay: entry %s: %s\n", (const char *)m->_private,
                rd_kafka_err2str(m->err));
    } else {
        sc->delivered++;
    }
    free(m->_private);
}

static void replay_entry(scan_t *sc, const rd_kafka_message_t *m, json_t *e)
{
    char pos[48];
    snprintf(pos, sizeof(pos), "%d:%lld", (int)m->partition, (long long)m->offset);
    const char *topic = sc->to ? sc->to : str_at(e, "source", "topic");
    const char *orig = str_at(e, "original", NULL);
    json_t *okey = json_object_get(e, "original_key");
    size_t vlen = 0, klen = 0;
    unsigned char *value = orig ? gt_base64_decode(orig, &vlen) : NULL;
    unsigned char *key =
        json_is_string(okey) ? gt_base64_decode(json_string_value(okey), &klen) : NULL;
    if (json_is_true(json_object_get(e, "original_truncated"))) {
        /* Only a prefix is kept: replaying it would publish a broken message. */
        fprintf(stderr,
                "gantry dlq replay: entry %s: original truncated (%lld bytes, sha256 %s), "
                "skipped\n",
                pos, (long long)json_integer_value(json_object_get(e, "original_size")),
                str_at(e, "original_sha256", NULL) ? str_at(e, "original_sha256", NULL) : "?");
        sc->skipped++;
        goto out;
    }
    if (!topic || !value || (json_is_string(okey) && !key)) {
        fprintf(stderr,
                "gantry dlq replay: entry %s: no source topic or malformed original, "
                "skipped\n",
                pos);
        sc->skipped++;
        goto out;
    }
    if (sc->dry_run) {
        printf("would replay %s -> %s (%zu bytes, key %.*s)\n", pos, topic, vlen,
               key ? (int)klen : 1, key ? (const char *)key : "-");
        goto out;
    }
    char *tag = strdup(pos);
    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(sc->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
                                RD_KAFKA_V_VALUE(value, vlen),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(tag),
                                RD_KAFKA_V_HEADER("gantry-replayed-from", pos, -1), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(sc->producer, 100);
    }
    if (err) {
        fprintf(stderr, "gantry dlq replay: entry %s: %s\n", pos, rd_kafka_err2str(err));
        free(tag);
        sc->failed++;
    } else {
        /* tag is the message's opaque, freed in its delivery report */
        sc->queued++; /* NOLINT(clang-analyzer-unix.Malloc) */
        printf("replayed %s -> %s\n", pos, topic);
    }
out:
    free(value);
    free(key);
}

static void on_entry(scan_t *sc, const rd_kafka_message_t *m, int replay)
{
    json_t *e = m->payload ? gt_json_parse(m->payload, m->len, 0, NULL) : NULL;
    if (!json_is_object(e)) {
        if (!replay || sc->f->n_picks)
            fprintf(stderr, "gantry dlq: entry %d:%lld is not a JSON object, skipped\n",
                    (int)m->partition, (long long)m->offset);
        sc->skipped++;
    } else if (matches(sc->f, m, e)) {
        sc->matched++;
        if (replay)
            replay_entry(sc, m, e);
        else
            list_entry(sc, m, e);
    }
    json_decref(e);
}

/* Reads every partition of topic from its start to the high watermark it
 * had when we began, calling on_entry for each message. */
static int scan_topic(rd_kafka_t *rk, const char *topic, scan_t *sc, int replay, int64_t deadline)
{
    rd_kafka_topic_partition_list_t *list = NULL;
    gt_kafka_part_t *parts = NULL;
    int64_t *high = NULL;
    int nparts = 0, left = 0, rc = -1;
    rd_kafka_resp_err_t err;
    char why[512];
    int prc =
        gt_kafka_partitions(rk, topic, remaining_ms(deadline), &parts, &nparts, why, sizeof(why));
    if (prc == -ENOENT) {
        rc = 0; /* no DLQ topic yet: nothing ever failed */
        goto out;
    }
    if (prc != 0) {
        fprintf(stderr, "gantry dlq: %s\n", why);
        goto out;
    }
    /* Partitions are numbered 0..n-1: high[] is indexed by partition id. */
    high = calloc((size_t)nparts + 1, sizeof(*high));
    list = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++) {
        int32_t p = parts[i].id;
        if (p < 0 || p >= nparts)
            continue;
        high[p] = parts[i].hi;
        if (parts[i].hi > parts[i].lo) {
            rd_kafka_topic_partition_list_add(list, topic, p)->offset = parts[i].lo;
            left++;
        } else {
            high[p] = -1; /* done */
        }
    }
    if (left && (err = rd_kafka_assign(rk, list)) != 0) {
        fprintf(stderr, "gantry dlq: assign: %s\n", rd_kafka_err2str(err));
        goto out;
    }
    while (left > 0) {
        if (gt_clock_mono_ms() >= deadline) {
            fprintf(stderr, "gantry dlq: timed out before the end of %s\n", topic);
            goto out;
        }
        int wait = remaining_ms(deadline);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait < 200 ? wait : 200);
        if (sc->producer)
            rd_kafka_poll(sc->producer, 0);
        if (!m)
            continue;
        int32_t p = m->partition;
        int64_t *hp = p >= 0 && p < nparts && high[p] >= 0 ? &high[p] : NULL;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (hp && m->offset >= *hp) {
                *hp = -1;
                left--;
            }
        } else if (m->err) {
            fprintf(stderr, "gantry dlq: %s\n", rd_kafka_message_errstr(m));
        } else if (hp && m->offset < *hp) {
            on_entry(sc, m, replay);
            if (m->offset >= *hp - 1) {
                *hp = -1;
                left--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    rc = 0;
out:
    free(parts);
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    free(high);
    return rc;
}

static rd_kafka_t *new_client(const gt_config_t *cfg, rd_kafka_type_t type, void *opaque)
{
    char err[512], group[64];
    rd_kafka_conf_t *conf = gt_cli_kafka_conf(cfg, err, sizeof(err));
    if (!conf)
        goto fail;
    if (type == RD_KAFKA_CONSUMER) {
        /* Read-only: a private group id that never joins or commits. */
        snprintf(group, sizeof(group), "gantry-cli-dlq-%ld", (long)getpid());
        if (rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err)) ||
            rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
            rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, sizeof(err)) ||
            rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)))
            goto fail;
    } else {
        if (rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
            rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err)) ||
            (!json_object_get(cfg->kafka_props, "message.timeout.ms") &&
             rd_kafka_conf_set(conf, "message.timeout.ms", "30000", err, sizeof(err))))
            goto fail;
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
        rd_kafka_conf_set_opaque(conf, opaque);
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (rk) { /* rk owns conf now */
        if (type == RD_KAFKA_CONSUMER)
            rd_kafka_poll_set_consumer(rk);
        return rk;
    }
fail:
    fprintf(stderr, "gantry dlq: %s\n", err);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return NULL;
}

int gt_cli_dlq(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"offset", required_argument, NULL, 'o'},
        {"code", required_argument, NULL, 'C'},
        {"stage", required_argument, NULL, 's'},
        {"source", required_argument, NULL, 'S'},
        {"to", required_argument, NULL, 't'},
        {"dry-run", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static filter_t f; /* large: not on the stack */
    scan_t sc = {.f = &f};
    const char *config = GT_CLI_DEFAULT_CONFIG;
    long long timeout_ms = DLQ_TIMEOUT_MS;
    gt_config_t *cfg = NULL;
    rd_kafka_t *consumer = NULL;
    int r, rc = GT_CLI_FAIL, replay;

    memset(&f, 0, sizeof(f));
    if (argc < 2)
        return gt_cli_usage_error("dlq", "missing subcommand (list or replay)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        dlq_usage(stdout);
        return GT_CLI_OK;
    }
    if (strcmp(argv[1], "list") == 0)
        replay = 0;
    else if (strcmp(argv[1], "replay") == 0)
        replay = 1;
    else
        return gt_cli_usage_error("dlq", "unknown subcommand '%s' (list or replay)", argv[1]);
    sc.cmd = argv[1];
    argc--, argv++;
    optind = 1;
    while ((r = getopt_long(argc, argv, ":c:o:C:s:S:t:njT:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'o':
            if (f.n_picks >= MAX_PICKS || parse_pick(optarg, &f.picks[f.n_picks]) != 0)
                return gt_cli_usage_error("dlq", "--offset: expected [PARTITION:]OFFSET, got '%s'",
                                          optarg);
            f.n_picks++;
            break;
        case 'C': f.code = optarg; break;
        case 's': f.stage = optarg; break;
        case 'S': f.source = optarg; break;
        case 't': sc.to = optarg; break;
        case 'n': sc.dry_run = 1; break;
        case 'j': sc.as_json = 1; break;
        case 'T':
            if (gt_cli_parse_ms(optarg, &timeout_ms) != 0)
                return gt_cli_usage_error("dlq", "--timeout-ms: not a number of ms: '%s'", optarg);
            break;
        case 'h': dlq_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("dlq", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("dlq", "unexpected argument '%s'", argv[optind]);
    if (replay && !f.n_picks && !f.code && !f.stage && !f.source)
        return gt_cli_usage_error("dlq", "replay needs --offset, --code, --stage or --source");
    if (!replay && (sc.to || sc.dry_run))
        return gt_cli_usage_error("dlq", "--to and --dry-run are for replay");

    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    if (!(consumer = new_client(cfg, RD_KAFKA_CONSUMER, NULL)))
        goto out;
    if (replay && !sc.dry_run && !(sc.producer = new_client(cfg, RD_KAFKA_PRODUCER, &sc)))
        goto out;
    int64_t deadline = gt_clock_mono_ms() + timeout_ms;
    if (!replay && !sc.as_json)
        printf("%-10s %-24s %-20s %-18s %-28s %-24s %s\n", "ENTRY", "FAILED_AT", "CODE", "STAGE",
               "SOURCE", "REQUEST_ID", "REASON");
    int scanned = scan_topic(consumer, cfg->topics.dlq, &sc, replay, deadline);
    /* Every queued message ends delivered or failed (message.timeout.ms). */
    while (sc.producer && sc.delivered + sc.failed < sc.queued)
        rd_kafka_poll(sc.producer, 100);
    if (sc.producer)
        rd_kafka_flush(sc.producer, remaining_ms(deadline));
    if (scanned != 0)
        goto out;
    if (replay && !sc.dry_run)
        printf("replayed %ld of %ld matching entr%s\n", sc.delivered, sc.matched,
               sc.matched == 1 ? "y" : "ies");
    else if (!sc.as_json)
        printf("# %ld entr%s\n", sc.matched, sc.matched == 1 ? "y" : "ies");
    rc = sc.failed || (replay && sc.skipped && f.n_picks) ? GT_CLI_FAIL : GT_CLI_OK;
    if (f.n_picks && sc.matched < f.n_picks) {
        fprintf(stderr, "gantry dlq: %ld of %d --offset entr%s not found\n",
                (long)f.n_picks - sc.matched, f.n_picks, f.n_picks == 1 ? "y" : "ies");
        rc = GT_CLI_FAIL;
    }
out:
    if (consumer) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
    if (sc.producer)
        rd_kafka_destroy(sc.producer);
    gt_config_free(cfg);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
