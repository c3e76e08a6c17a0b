/* submit.c - `gantry submit`: publish requests (JSON lines or arguments) byte for byte. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json_text.h"
#include "log.h"

/* Delivery outcome counters, updated by the delivery report callback. */
typedef struct submit_stats {
    long delivered, failed;
    const char *unit; /* "line" or "argument": how messages are numbered */
} submit_stats_t;

static void submit_usage(FILE *f)
{
    fprintf(f, "usage: gantry submit [--config FILE] [--topic T] [--file FILE | JSON...]\n"
               "\n"
               "Publishes each request (one JSON object per line of FILE, or per argument)\n"
               "to the requests topic, keyed by its request_id, with an idempotent producer,\n"
               "and waits until every message is acknowledged. Lines are sent exactly as\n"
               "given, even when they are not valid JSON; blank lines are skipped.\n"
               "Prints `submitted N`; exits 1 if any message failed.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -f, --file FILE    JSON lines to send ('-' reads stdin)\n"
               "  -t, --topic T      topic (default: topics.requests of the configuration)\n"
               "  -h, --help         this help\n");
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    submit_stats_t *st = opaque;
    if (m->err) {
        st->failed++;
        fprintf(stderr, "gantry submit: %s %ld: %s\n", st->unit, (long)(intptr_t)m->_private,
                rd_kafka_err2str(m->err));
    } else {
        st->delivered++;
    }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: up to 4 (warning) matter to the user. */
    if (level <= 4)
        gt_warn("kafka: %s: %s", fac, buf);
    else
        gt_debug("kafka: %s: %s", fac, buf);
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* Queues one request; keyed by request_id when it parses as an object that
 * has one. Returns 0, or -1 when it could not be queued (reported). */
static int send_one(rd_kafka_t *rk, const char *topic, const char *buf, size_t len, long seq,
                    const char *unit)
{
    json_t *doc = gt_json_parse(buf, len, 0, NULL);
    const char *key = NULL;
    size_t key_len = 0;
    rd_kafka_resp_err_t err;

    if (json_is_object(doc) && json_is_string(json_object_get(doc, "request_id"))) {
        key = json_string_value(json_object_get(doc, "request_id"));
        key_len = json_string_length(json_object_get(doc, "request_id"));
    }
    for (;;) {
        err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                RD_KAFKA_V_VALUE((void *)buf, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_OPAQUE((void *)(intptr_t)seq), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        /* The local queue is full: serve delivery reports to make room. */
        rd_kafka_poll(rk, 100);
    }
    json_decref(doc);
    if (err) {
        fprintf(stderr, "gantry submit: %s %ld: %s\n", unit, seq, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

int gt_cli_submit(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"file", required_argument, NULL, 'f'},
        {"topic", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *file = NULL, *topic = NULL;
    gt_config_t *cfg = NULL;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    FILE *in = NULL;
    char *line = NULL;
    size_t cap = 0;
    char err[512];
    submit_stats_t st = {0, 0, NULL};
    long seq = 0, queued = 0, unqueued = 0; /* seq: line number */
    int r, rc = GT_CLI_FAIL;

    while ((r = getopt_long(argc, argv, ":c:f:t:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'f': file = optarg; break;
        case 't': topic = optarg; break;
        case 'h': submit_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("submit", argv, r);
        }
    }
    if (!file && optind >= argc)
        return gt_cli_usage_error("submit",
                                  "nothing to submit: give --file FILE or JSON arguments");
    if (file && optind < argc)
        return gt_cli_usage_error("submit", "give either --file or JSON arguments, not both");

    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    if (!topic)
        topic = cfg->topics.requests;
    if (file) {
        in = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
        if (!in) {
            fprintf(stderr, "gantry submit: %s: %s\n", file, strerror(errno));
            goto out;
        }
    }

    if (!(conf = gt_cli_kafka_conf(cfg, err, sizeof(err)))) {
        fprintf(stderr, "gantry submit: %s\n", err);
        goto out;
    }
    /* Set after kafka.properties, which must not weaken them: no duplicate
     * on a retried send, durable on every in-sync replica. A broker that
     * never answers fails the messages after 30 s unless configured. */
    if (rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err)) ||
        (!json_object_get(cfg->kafka_props, "message.timeout.ms") &&
         rd_kafka_conf_set(conf, "message.timeout.ms", "30000", err, sizeof(err)))) {
        fprintf(stderr, "gantry submit: %s\n", err);
        goto out;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_opaque(conf, &st);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        fprintf(stderr, "gantry submit: %s\n", err);
        goto out;
    }
    conf = NULL; /* owned by rk now */

    if (in) {
        ssize_t n;
        st.unit = "line";
        while ((n = getline(&line, &cap, in)) != -1) {
            size_t len = (size_t)n;
            seq++;
            if (len > 0 && line[len - 1] == '\n')
                len--;
            if (is_blank(line, len))
                continue;
            if (send_one(rk, topic, line, len, seq, st.unit) == 0)
                queued++;
            else
                unqueued++;
            rd_kafka_poll(rk, 0);
        }
        if (ferror(in)) {
            fprintf(stderr, "gantry submit: %s: read error\n", file);
            unqueued++;
        }
    } else {
        st.unit = "argument";
        for (int i = optind; i < argc; i++) {
            size_t len = strlen(argv[i]);
            if (is_blank(argv[i], len))
                continue;
            if (send_one(rk, topic, argv[i], len, i - optind + 1, st.unit) == 0)
                queued++;
            else
                unqueued++;
            rd_kafka_poll(rk, 0);
        }
    }
    /* message.timeout.ms bounds this wait: every queued message ends
     * delivered or failed, through dr_cb. */
    while (st.delivered + st.failed < queued)
        rd_kafka_poll(rk, 500);

    printf("submitted %ld\n", st.delivered);
    if (st.failed + unqueued > 0)
        fprintf(stderr, "gantry submit: %ld failed\n", st.failed + unqueued);
    else
        rc = GT_CLI_OK;
out:
    free(line);
    if (in && in != stdin)
        fclose(in);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    gt_config_free(cfg);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
