/* main.c - gantry-worker: consumes task lanes, runs tasks on providers, publishes results. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "config.h"
#include "executor.h"
#include "hostedai.h"
#include "http.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "trace.h"
#include "worker_config.h"
#include "wstats.h"

/* How long a first SIGTERM lets tasks in flight finish before aborting them
 * is worker.drain_ms. After an abort, how long releases and deliveries may take before we stop
 * anyway. */
#define WORKER_ABORT_GRACE_MS 15000
#define WORKER_MAX_LANES 64

typedef struct worker {
    uv_loop_t loop;
    gt_config_t *cfg;
    char id[256];
    const char *lanes[WORKER_MAX_LANES + 1];
    char *lane_buf;
    char *topics[WORKER_MAX_LANES + 1];
    gt_producer_t *producer;
    gt_consumer_t *consumer;
    gt_http_t *http;
    gt_executor_t *ex;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t stop_timer; /* drain limit, then abort grace */
    int signals;
    int stopping; /* teardown started */
} worker_t;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: gantry-worker [--config FILE] [--id ID] [--lanes a,b] [--max-in-flight N]\n"
        "\n"
        "Consumes the task topics of its lanes, runs each task on its model's runtime\n"
        "(HostedAI: allocate, infer, release) and publishes task results and usage.\n"
        "\n"
        "  -c, --config FILE      configuration (default gantry.json)\n"
        "      --id ID            worker id (default worker-<hostname>-<pid>)\n"
        "      --lanes a,b        lanes to consume (default worker.lanes, else all)\n"
        "      --max-in-flight N  tasks in flight before pausing (default worker.max_in_flight)\n"
        "      --admin-port N     serve /health, /ready, /metrics on N (0: any; overrides\n"
        "                         admin.port)\n"
        "  -h, --help             this help\n"
        "\n"
        "SIGTERM/SIGINT: finish tasks in flight (up to worker.drain_ms, default 30 s)\n"
        "and exit 0; a second signal aborts them (allocations released, tasks\n"
        "redelivered). SIGHUP: reload log.level and tenants from the file.\n");
}

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "gantry-worker: %s%s%s (see --help)\n", what, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static void teardown(worker_t *w);

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_idle(gt_executor_t *ex, void *arg)
{
    worker_t *w = arg;
    (void)ex;
    teardown(w);
}

static void on_stop_timer(uv_timer_t *t)
{
    worker_t *w = t->data;
    if (w->signals < 2) {
        gt_warn("drain time of %lld ms is over: aborting %d task(s)",
                (long long)w->cfg->worker_drain_ms, gt_executor_in_flight(w->ex));
        w->signals = 2;
        uv_timer_start(&w->stop_timer, on_stop_timer, WORKER_ABORT_GRACE_MS, 0);
        gt_executor_abort(w->ex, on_idle, w);
        return;
    }
    gt_error("releases and deliveries still pending after %d ms: stopping anyway",
             WORKER_ABORT_GRACE_MS);
    teardown(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    worker_t *w = s->data;
    if (w->stopping)
        return;
    w->signals++;
    if (w->signals == 1) {
        gt_info("signal %d: draining %d task(s) in flight (up to %lld ms)", signum,
                gt_executor_in_flight(w->ex), (long long)w->cfg->worker_drain_ms);
        uv_timer_start(&w->stop_timer, on_stop_timer, (uint64_t)w->cfg->worker_drain_ms, 0);
        gt_executor_drain(w->ex, on_idle, w);
    } else if (w->signals == 2) {
        gt_warn("signal %d again: aborting %d task(s)", signum, gt_executor_in_flight(w->ex));
        uv_timer_start(&w->stop_timer, on_stop_timer, WORKER_ABORT_GRACE_MS, 0);
        gt_executor_abort(w->ex, on_idle, w);
    } else {
        gt_error("signal %d a third time: stopping now", signum);
        teardown(w);
    }
}

static void on_sighup(uv_signal_t *s, int signum)
{
    worker_t *w = s->data;
    (void)signum;
    if (!w->stopping)
        gt_config_reload(w->cfg);
}

/* Closes every loop handle; uv_run then returns and main frees the rest. */
static void teardown(worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    gt_executor_emit(w->ex, "worker.stopped",
                     json_pack("{s:i}", "abandoned", gt_executor_in_flight(w->ex)));
    gt_executor_close(w->ex);
    gt_trace_export_stop(); /* one last batch of spans, then its handles close */
    gt_consumer_close_handles(w->consumer);
    gt_http_free(w->http);
    w->http = NULL;
    gt_producer_close_handles(w->producer);
    uv_close((uv_handle_t *)&w->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&w->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&w->sighup, on_handle_closed);
    uv_close((uv_handle_t *)&w->stop_timer, on_handle_closed);
    /* Closing the handles restored the default actions: another SIGTERM now
     * would kill us in the middle of the commit and flush (bounded anyway). */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
}

/* Splits a comma list into w->lanes; returns 0, or -1 on an empty or unknown lane. */
static int parse_lanes(worker_t *w, const char *list, const char **bad)
{
    size_t n = 0;
    w->lane_buf = strdup(list);
    if (!w->lane_buf)
        return -1;
    for (char *save = NULL, *tok = strtok_r(w->lane_buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int known = 0;
        for (size_t i = 0; i < w->cfg->n_lanes; i++)
            known |= strcmp(w->cfg->lanes[i], tok) == 0;
        if (!known || n == WORKER_MAX_LANES) {
            *bad = tok;
            return -1;
        }
        w->lanes[n++] = tok;
    }
    w->lanes[n] = NULL;
    if (n == 0) {
        *bad = list;
        return -1;
    }
    return 0;
}

typedef struct args {
    const char *config, *id, *lanes;
    long max_in_flight; /* 0: worker.max_in_flight */
    int admin_port;     /* -1: admin.port */
} args_t;

/* Reads the command line into args. Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, args_t *args)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"lanes", required_argument, NULL, 'l'},
        {"max-in-flight", required_argument, NULL, 'm'},
        {"admin-port", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': args->config = optarg; break;
        case 'i': args->id = optarg; break;
        case 'l': args->lanes = optarg; break;
        case 'a':
            if (gt_admin_parse_port(optarg, &args->admin_port) != 0)
                return bad_usage("--admin-port needs a port from 0 to 65535", optarg);
            break;
        case 'm': {
            char *end;
            args->max_in_flight = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || args->max_in_flight < 1 || args->max_in_flight > 1000000)
                return bad_usage("--max-in-flight needs a number from 1 to 1000000", optarg);
            break;
        }
        case 'h': usage(stdout); return 0;
        case ':': return bad_usage("missing value for", argv[optind - 1]);
        default: return bad_usage("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument", argv[optind]);
    if (args->id && (!*args->id || strlen(args->id) >= sizeof(((worker_t *)0)->id)))
        return bad_usage("--id must be 1 to 255 characters", NULL);
    return -1;
}

/* w->cfg with the worker's sections. Returns 0, or 1 (reported). */
static int load_config(worker_t *w, const args_t *args)
{
    char err[4096] = "";
    gt_worker_config_register();
    w->cfg = gt_config_load(args->config, err, sizeof(err));
    if (!w->cfg) {
        size_t n = strlen(err);
        fprintf(stderr, "gantry-worker: %s%s", err[0] ? err : "cannot load configuration",
                n && err[n - 1] == '\n' ? "" : "\n");
        return 1;
    }
    return 0;
}

/* The lanes to consume (--lanes, else worker.lanes) and the worker's id
 * (--id, else worker-HOST-PID). Returns 0, or an exit code (reported). */
static int identify(worker_t *w, const args_t *args)
{
    if (args->lanes) {
        const char *bad = NULL;
        if (parse_lanes(w, args->lanes, &bad) != 0)
            return bad_usage("unknown lane in --lanes", bad);
    } else {
        size_t n =
            w->cfg->n_worker_lanes < WORKER_MAX_LANES ? w->cfg->n_worker_lanes : WORKER_MAX_LANES;
        for (size_t i = 0; i < n; i++)
            w->lanes[i] = w->cfg->worker_lanes[i];
        w->lanes[n] = NULL;
        if (n == 0) {
            fprintf(stderr,
                    "gantry-worker: worker.lanes: no lane to consume (no model declares one)\n");
            return 1;
        }
    }
    if (args->id) {
        snprintf(w->id, sizeof(w->id), "%s", args->id);
    } else {
        char host[200] = "localhost";
        gethostname(host, sizeof(host) - 1);
        snprintf(w->id, sizeof(w->id), "worker-%s-%ld", host, (long)getpid());
    }
    return 0;
}

/* The producer, the HTTP client, the executor and the consumer of the lanes'
 * task topics, on w->loop. Returns 0, or -1 (reported; what was opened stays
 * for abort_start). */
static int open_parts(worker_t *w, long max_in_flight)
{
    char err[4096];
    w->producer = gt_producer_new(&w->loop, w->cfg, err, sizeof(err));
    if (!w->producer) {
        fprintf(stderr, "gantry-worker: kafka producer: %s\n", err);
        return -1;
    }
    w->http = gt_http_new(&w->loop);
    if (!w->http) {
        fprintf(stderr, "gantry-worker: cannot start the HTTP client\n");
        return -1;
    }
    gt_executor_opts_t eopts = {
        .cfg = w->cfg,
        .worker_id = w->id,
        .max_in_flight = (int)max_in_flight,
        .producer = w->producer,
        .http = w->http,
        .lanes = w->lanes,
    };
    w->ex = gt_executor_new(&w->loop, &eopts, err, sizeof(err));
    if (!w->ex) {
        fprintf(stderr, "gantry-worker: %s\n", err);
        return -1;
    }
    size_t n_topics = 0;
    for (; w->lanes[n_topics]; n_topics++) {
        char topic[512];
        w->topics[n_topics] =
            strdup(gt_config_lane_topic(w->cfg, w->lanes[n_topics], topic, sizeof(topic)));
        if (!w->topics[n_topics]) {
            fprintf(stderr, "gantry-worker: out of memory\n");
            return -1;
        }
    }
    w->topics[n_topics] = NULL;
    gt_consumer_opts_t copts = {
        .group_id = w->cfg->group_worker,
        .topics = (const char *const *)w->topics,
        .cb = gt_executor_on_message,
        .arg = w->ex,
        .commit_interval_ms = w->cfg->commit_interval_ms,
        .instance_id = w->id,
        /* Few per loop turn: a busy loop then takes tasks as fast as it ends
         * them, and the rest wait in Kafka rather than half-started in the
         * loop (500 per turn made each turn ~250 ms at 2,000 in flight, and
         * every HTTP hop waited for it: bench/providers, docs/benchmarks.md). */
        .max_per_wakeup = 64,
    };
    w->consumer = gt_consumer_new(&w->loop, w->cfg, &copts, err, sizeof(err));
    if (!w->consumer) {
        fprintf(stderr, "gantry-worker: kafka consumer: %s\n", err);
        return -1;
    }
    return 0;
}

/* After open_parts failed: closes what it opened and lets the loop finish. */
static void abort_start(worker_t *w)
{
    if (!w->producer)
        return;
    if (w->ex)
        gt_executor_close(w->ex);
    if (w->http)
        gt_http_free(w->http);
    gt_producer_close_handles(w->producer);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    gt_executor_free(w->ex);
    gt_producer_free(w->producer, 0);
}

/* Signals, the span exporter, heartbeats, the stats and /health /ready
 * /metrics (a worker runs without them when they cannot open). */
static void start_process(worker_t *w, const args_t *args, gt_admin_t **admin)
{
    char err[4096];
    uv_signal_init(&w->loop, &w->sigterm);
    uv_signal_init(&w->loop, &w->sigint);
    uv_signal_init(&w->loop, &w->sighup);
    uv_timer_init(&w->loop, &w->stop_timer);
    w->sigterm.data = w->sigint.data = w->sighup.data = w->stop_timer.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_signal_start(&w->sighup, on_sighup, SIGHUP);

    if (gt_trace_export_start(&w->loop, w->cfg, "gantry-worker") != 0)
        gt_warn("tracing: cannot start the OTLP exporter; spans are not exported");
    gt_executor_start_heartbeat(w->ex);
    size_t n_topics = 0;
    while (w->topics[n_topics])
        n_topics++;
    gt_info("worker %s started: group %s, %zu lane topic(s) from %s, max %d in flight", w->id,
            w->cfg->group_worker, n_topics, w->topics[0],
            args->max_in_flight > 0 ? (int)args->max_in_flight : w->cfg->worker_max_in_flight);
    gt_wstats_init();
    if (gt_admin_open(w->cfg, args->admin_port, w->producer, 0, admin, err, sizeof(err)) != 0)
        gt_error("%s: running without /health, /ready and /metrics", err);
}

/* Once every handle is closed: the blocking parts (commit, flush). */
static void finish(worker_t *w)
{
    gt_consumer_free(w->consumer);
    w->consumer = NULL;
    gt_producer_free(w->producer, 10000);
    w->producer = NULL;
    gt_executor_free(w->ex);
    w->ex = NULL;
    gt_info("worker %s stopped", w->id);
}

int main(int argc, char **argv)
{
    static worker_t w; /* large, and signal handles must outlive main's frame anyway */
    args_t args = {.config = "gantry.json", .admin_port = -1};
    gt_admin_t *admin = NULL;
    int rc = parse_args(argc, argv, &args);
    if (rc >= 0)
        return rc;
    if ((rc = load_config(&w, &args)) != 0)
        return rc;
    if ((rc = identify(&w, &args)) != 0)
        goto out_cfg;
    rc = 1;

    gt_log_init("gantry-worker", GT_LOG_INFO);
    int level = gt_log_parse_level(w.cfg->log_level);
    if (level >= 0)
        gt_log_set_level((gt_log_level_t)level);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP,
           SIG_IGN); /* a reload sent while starting must not kill us; the handler comes later */

    uv_loop_init(&w.loop);
    if (open_parts(&w, args.max_in_flight) != 0) {
        abort_start(&w);
        goto out_loop;
    }
    start_process(&w, &args, &admin);
    /* For supervisors and tests: the worker is up and consuming. */
    printf("worker_id=%s\n", w.id);
    fflush(stdout);

    uv_run(&w.loop, UV_RUN_DEFAULT);
    gt_admin_stop(admin); /* its checks use the producer */
    finish(&w);
    rc = 0;
out_loop:
    for (size_t i = 0; w.topics[i]; i++)
        free(w.topics[i]);
    uv_loop_close(&w.loop);
out_cfg:
    free(w.lane_buf);
    gt_config_free(w.cfg);
    gt_metrics_free();
    return rc;
}
