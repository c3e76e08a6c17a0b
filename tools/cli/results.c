/* results.c - `gantry results`: print the results topic, one JSON per line (assign, no commits). */
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "log.h"

#define RESULTS_DEFAULT_TIMEOUT_MS 30000

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    stop_requested = sig;
}

/* One assigned partition and where reading it stops. */
typedef struct part {
    int32_t id;
    int64_t high; /* high watermark when we started: stop here */
    int done;
} part_t;

static void results_usage(FILE *f)
{
    fprintf(f, "usage: gantry results [--config FILE] [--topic T] [--follow [--from-beginning]]\n"
               "                      [--timeout-ms N]\n"
               "\n"
               "Prints result messages, one JSON per line. Without --follow, prints every\n"
               "message in the topic now (each partition from its start up to its high\n"
               "watermark) and exits 0. With --follow, prints new results (all of them with\n"
               "--from-beginning) until SIGINT. Reads by assignment: no consumer group, no\n"
               "offset commits.\n"
               "\n"
               "  -c, --config FILE     configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -t, --topic T         topic (default: topics.results of the configuration)\n"
               "  -f, --follow          keep printing until interrupted\n"
               "  -b, --from-beginning  with --follow, start at the oldest message\n"
               "  -T, --timeout-ms N    without --follow: fail if the end is not reached in\n"
               "                        N ms (default 30000); with --follow: stop after N ms\n"
               "  -h, --help            this help\n");
}

static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - gt_clock_mono_ms();
    return left < 0 ? 0 : left > 1000000000 ? 1000000000 : (int)left;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 4)
        gt_warn("kafka: %s: %s", fac, buf);
    else
        gt_debug("kafka: %s: %s", fac, buf);
}

/* Fetches the partition count of topic. Returns the count, 0 when the topic
 * does not exist, or -1 on error (reported). */
static int partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (!rkt) {
        fprintf(stderr, "gantry results: %s: %s\n", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    if (err) {
        fprintf(stderr, "gantry results: metadata for %s: %s\n", topic, rd_kafka_err2str(err));
    } else if (md->topic_cnt < 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        n = 0;
    } else if (md->topics[0].err) {
        fprintf(stderr, "gantry results: %s: %s\n", topic, rd_kafka_err2str(md->topics[0].err));
    } else {
        n = md->topics[0].partition_cnt;
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

/* Writes one message value and a newline. Returns 0 or -1 (stdout closed). */
static int print_value(const rd_kafka_message_t *m, int flush)
{
    if (!m->payload)
        return 0; /* a tombstone is no result */
    if (fwrite(m->payload, 1, m->len, stdout) != m->len || putchar('\n') == EOF)
        return -1;
    if (flush && fflush(stdout) != 0)
        return -1;
    return 0;
}

/* Reads every partition up to the high watermark it had at the start. */
static int read_to_end(rd_kafka_t *rk, const char *topic, int nparts, int64_t deadline)
{
    part_t *parts = calloc((size_t)nparts, sizeof(*parts));
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(nparts);
    int left = 0, rc = GT_CLI_FAIL;

    if (!parts || !list) {
        fprintf(stderr, "gantry results: out of memory\n");
        goto out;
    }
    for (int p = 0; p < nparts; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, remaining_ms(deadline));
        if (err) {
            fprintf(stderr, "gantry results: %s [%d]: watermarks: %s\n", topic, p,
                    rd_kafka_err2str(err));
            goto out;
        }
        parts[p] = (part_t){.id = p, .high = hi, .done = hi <= lo};
        if (!parts[p].done) {
            rd_kafka_topic_partition_list_add(list, topic, p)->offset = lo;
            left++;
        }
    }
    if (left == 0) {
        rc = GT_CLI_OK;
        goto out;
    }
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, list);
    if (aerr) {
        fprintf(stderr, "gantry results: assign: %s\n", rd_kafka_err2str(aerr));
        goto out;
    }
    while (left > 0 && !stop_requested) {
        if (gt_clock_mono_ms() >= deadline) {
            fprintf(stderr,
                    "gantry results: timed out before the end of %s (%d partition(s) left)\n",
                    topic, left);
            goto out;
        }
        int wait = remaining_ms(deadline);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait < 200 ? wait : 200);
        if (!m)
            continue;
        int32_t p = m->partition;
        part_t *pt = p >= 0 && p < nparts ? &parts[p] : NULL;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Also ends partitions whose last offsets are transaction markers,
             * which are never delivered. */
            if (pt && !pt->done && m->offset >= pt->high) {
                pt->done = 1;
                left--;
            }
        } else if (m->err) {
            fprintf(stderr, "gantry results: %s\n", rd_kafka_message_errstr(m));
        } else if (pt && !pt->done && m->offset < pt->high) {
            if (print_value(m, 0) != 0) {
                rd_kafka_message_destroy(m);
                goto out;
            }
            if (m->offset >= pt->high - 1) {
                pt->done = 1;
                left--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    rc = GT_CLI_OK;
out:
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    free(parts);
    return rc;
}

/* Prints messages as they come until a signal or the deadline. */
static int follow(rd_kafka_t *rk, const char *topic, int from_beginning, int64_t deadline)
{
    int nparts = 0;
    /* The topic may not exist yet: wait for it. */
    while (!stop_requested && gt_clock_mono_ms() < deadline) {
        nparts = partition_count(rk, topic,
                                 remaining_ms(deadline) < 5000 ? remaining_ms(deadline) : 5000);
        if (nparts < 0)
            return GT_CLI_FAIL;
        if (nparts > 0)
            break;
        rd_kafka_poll(rk, 1000 < remaining_ms(deadline) ? 1000 : remaining_ms(deadline));
    }
    if (nparts <= 0)
        return GT_CLI_OK;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(list, topic, p)->offset =
            from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
    rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (aerr) {
        fprintf(stderr, "gantry results: assign: %s\n", rd_kafka_err2str(aerr));
        return GT_CLI_FAIL;
    }
    while (!stop_requested && gt_clock_mono_ms() < deadline) {
        int wait = remaining_ms(deadline);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait < 200 ? wait : 200);
        if (!m)
            continue;
        int rc = 0;
        if (m->err == 0)
            rc = print_value(m, 1);
        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            fprintf(stderr, "gantry results: %s\n", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        if (rc != 0)
            return GT_CLI_FAIL;
    }
    return GT_CLI_OK;
}

int gt_cli_results(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"topic", required_argument, NULL, 't'},
        {"follow", no_argument, NULL, 'f'},
        {"from-beginning", no_argument, NULL, 'b'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *topic = NULL;
    int follow_mode = 0, from_beginning = 0, r, rc = GT_CLI_FAIL;
    long long timeout_ms = -1;
    gt_config_t *cfg = NULL;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    char err[512];

    while ((r = getopt_long(argc, argv, ":c:t:fbT:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 't': topic = optarg; break;
        case 'f': follow_mode = 1; break;
        case 'b': from_beginning = 1; break;
        case 'T':
            if (gt_cli_parse_ms(optarg, &timeout_ms) != 0)
                return gt_cli_usage_error("results", "--timeout-ms: not a number of ms: '%s'",
                                          optarg);
            break;
        case 'h': results_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("results", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("results", "unexpected argument '%s'", argv[optind]);

    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    if (!topic)
        topic = cfg->topics.results;
    if (!(conf = gt_cli_kafka_conf(cfg, err, sizeof(err)))) {
        fprintf(stderr, "gantry results: %s\n", err);
        goto out;
    }
    /* Read-only: never commit. librdkafka wants a group.id even to assign;
     * a private one that never joins or commits leaves no trace. */
    char group[64];
    snprintf(group, sizeof(group), "gantry-cli-results-%ld", (long)getpid());
    if (rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err))) {
        fprintf(stderr, "gantry results: %s\n", err);
        goto out;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        fprintf(stderr, "gantry results: %s\n", err);
        goto out;
    }
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(rk);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int64_t deadline = timeout_ms >= 0 ? gt_clock_mono_ms() + timeout_ms
                       : follow_mode   ? INT64_MAX / 2
                                       : gt_clock_mono_ms() + RESULTS_DEFAULT_TIMEOUT_MS;
    if (follow_mode) {
        rc = follow(rk, topic, from_beginning, deadline);
    } else {
        int nparts = partition_count(rk, topic, remaining_ms(deadline));
        if (nparts == 0) {
            fprintf(stderr, "gantry results: topic %s does not exist (yet)\n", topic);
            rc = GT_CLI_OK;
        } else if (nparts > 0) {
            rc = read_to_end(rk, topic, nparts, deadline);
        }
    }
    rd_kafka_consumer_close(rk);
out:
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    gt_config_free(cfg);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
