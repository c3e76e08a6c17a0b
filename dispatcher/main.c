/* main.c - gantry-dispatcher: intake and coordination of jobs, the usage
 * ledger and the lease reaper, on one libuv loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backlog.h"
#include "cache.h"
#include "clock.h"
#include "dispatcher.h"
#include "dispatcher_config.h"
#include "router.h"
#include "log.h"
#include "moderation.h"
#include "pgbatch.h"
#include "ratelimit.h"
#include "message.h"
#include "admin.h"
#include "metrics.h"
#include "release.h"
#include "reload.h"
#include "trace.h"

static const char usage_text[] =
    "usage: gantry-dispatcher --config FILE [--roles intake,coordinator,ledger,reaper] [--id ID]\n"
    "  Consumes requests and task results, runs the usage ledger and the lease reaper.\n"
    "  --roles   comma-separated subset of roles to run (default: all)\n"
    "  --id      process id used in events and logs (default dispatcher-HOST-PID)\n"
    "  --admin-port N  serve /health, /ready, /metrics on N (0: any; overrides admin.port)\n"
    "  SIGTERM/SIGINT: stop taking messages, finish work in flight (up to\n"
    "  dispatcher.drain_ms), commit and exit 0. SIGHUP: reload log.level and tenants.\n";

typedef struct app {
    gt_dispatcher_t d;
    gt_config_t *cfg; /* d.cfg, writable for reloads */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t drain;
    int64_t drain_deadline;
    int stopping;
    gt_admin_t *admin; /* the loop pushes its PostgreSQL state into /ready */
} app_t;

enum { ROLE_INTAKE = 1, ROLE_COORD = 2, ROLE_LEDGER = 4, ROLE_REAPER = 8 };

static void on_message(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    gt_dispatcher_t *d = arg;
    if (strcmp(msg->topic, d->cfg->topics.requests) == 0)
        gt_intake_handle(d, msg);
    else if (strcmp(msg->topic, d->cfg->topics.control) == 0)
        gt_cancel_handle(d, msg);
    else
        gt_coordinator_handle(d, msg);
    /* Bound the work held in memory; resumed as messages complete. */
    if (gt_consumer_in_flight(c) >= d->cfg->dispatcher_max_in_flight)
        gt_consumer_pause(c);
}

static int in_flight(app_t *a)
{
    int n = 0;
    if (a->d.consumer)
        n += gt_consumer_in_flight(a->d.consumer);
    if (a->d.ledger)
        n += gt_ledger_in_flight(a->d.ledger);
    n += gt_coordinator_in_flight(a->d.coordinator);
    n += gt_release_in_flight(a->d.release);
    return n + gt_effects_pending(a->d.effects) +
           (a->d.producer ? gt_producer_outstanding(a->d.producer) : 0);
}

/* Every PostgreSQL connection this process's roles use is up. */
static int pg_ready(const gt_dispatcher_t *d)
{
    return gt_pg_connected(d->pg) && (!d->pg_coord || gt_pg_connected(d->pg_coord)) &&
           (!d->pg_ledger || gt_pg_connected(d->pg_ledger));
}

/* Frees the connections: queries still queued fail into their callbacks. */
static void pg_free_all(gt_dispatcher_t *d)
{
    gt_pg_free(d->pg_ledger);
    gt_pg_free(d->pg_coord);
    gt_pg_free(d->pg);
    d->pg = d->pg_coord = d->pg_ledger = NULL;
}

static void close_all(app_t *a)
{
    uv_timer_stop(&a->drain);
    uv_close((uv_handle_t *)&a->drain, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sighup, NULL);
    /* Closing the handles restored the default actions: another SIGTERM now
     * would kill us in the middle of the commit and flush (bounded anyway). */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    a->d.closing = 1;
    if (a->d.consumer)
        gt_consumer_close_handles(a->d.consumer);
    if (a->d.ledger)
        gt_ledger_close(a->d.ledger);
    if (a->d.reaper)
        gt_reaper_close(a->d.reaper);
    gt_coordinator_close(a->d.coordinator);
    gt_release_close(a->d.release);
    gt_cache_close(a->d.cache);
    gt_ratelimit_close(a->d.ratelimit);
    gt_backlog_close(a->d.backlog);
    gt_moderation_free(a->d.moderation); /* aborts checks in flight; freed as the loop runs */
    a->d.moderation = NULL;
    gt_admin_set_ready(a->admin, "postgres", 0);
    pg_free_all(&a->d);
    gt_effects_close(a->d.effects); /* what waits for a re-send stays undone */
    gt_producer_close_handles(a->d.producer);
    gt_trace_export_stop(); /* one last batch of spans, then its handles close */
}

/* Resumes a paused consumer as work completes, and ends the drain at shutdown. */
static void on_drain_tick(uv_timer_t *t)
{
    app_t *a = t->data;
    gt_admin_set_ready(a->admin, "postgres", pg_ready(&a->d));
    if (!a->stopping) {
        if (a->d.consumer &&
            gt_consumer_in_flight(a->d.consumer) < a->d.cfg->dispatcher_max_in_flight * 3 / 4)
            gt_consumer_resume(a->d.consumer);
        return;
    }
    int n = in_flight(a);
    if (n == 0 || gt_clock_mono_ms() >= a->drain_deadline) {
        if (n)
            gt_warn("drain time over with %d message(s) in flight: they are redelivered", n);
        close_all(a);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    app_t *a = s->data;
    if (a->stopping) {
        gt_warn("second signal: stopping now");
        a->drain_deadline = 0;
        return;
    }
    gt_info("signal %d: draining %d message(s) in flight (up to %lld ms)", signum, in_flight(a),
            (long long)a->cfg->dispatcher_drain_ms);
    a->stopping = 1;
    a->drain_deadline = gt_clock_mono_ms() + a->cfg->dispatcher_drain_ms;
    if (a->d.consumer)
        gt_consumer_pause(a->d.consumer);
    if (a->d.ledger)
        gt_ledger_drain(a->d.ledger);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    app_t *a = s->data;
    (void)signum;
    if (!a->stopping)
        gt_config_reload(a->cfg);
}

static int parse_roles(const char *s)
{
    int roles = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "intake") == 0)
            roles |= ROLE_INTAKE;
        else if (strcmp(tok, "coordinator") == 0)
            roles |= ROLE_COORD;
        else if (strcmp(tok, "ledger") == 0)
            roles |= ROLE_LEDGER;
        else if (strcmp(tok, "reaper") == 0)
            roles |= ROLE_REAPER;
        else {
            roles = -1;
            break;
        }
    }
    free(copy);
    return roles;
}

typedef struct args {
    const char *config, *id;
    int roles;
    int admin_port; /* -1: admin.port */
} args_t;

/* Reads the command line into args. Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, args_t *args)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"admin-port", required_argument, NULL, 'a'},
        {"roles", required_argument, NULL, 'r'},  {"id", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:a:r:i:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': args->config = optarg; break;
        case 'a':
            if (gt_admin_parse_port(optarg, &args->admin_port) != 0) {
                fprintf(stderr, "gantry-dispatcher: bad --admin-port \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'i': args->id = optarg; break;
        case 'r':
            args->roles = parse_roles(optarg);
            if (args->roles <= 0) {
                fprintf(stderr, "gantry-dispatcher: bad --roles \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "gantry-dispatcher: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    return -1;
}

/* The configuration with the dispatcher's sections, checked against the
 * roles; NULL (reported on stderr) when it cannot serve them. */
static gt_config_t *load_config(const args_t *args)
{
    char err[4096];
    gt_dispatcher_config_register();
    gt_config_t *cfg = gt_config_load(args->config, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "gantry-dispatcher: bad configuration %s:\n%s\n", args->config, err);
        return NULL;
    }
    if (!cfg->pg_conninfo && (args->roles & (ROLE_INTAKE | ROLE_COORD | ROLE_LEDGER))) {
        fprintf(stderr, "gantry-dispatcher: %s: postgres.conninfo is required\n", args->config);
        gt_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* The process id (--id, or dispatcher-HOST-PID), a fresh incarnation and the
 * request maps. */
static void identify(gt_dispatcher_t *d, const char *id)
{
    if (id) {
        snprintf(d->id, sizeof(d->id), "%s", id);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(d->id, sizeof(d->id), "dispatcher-%s-%d", host, (int)getpid());
    }
    gt_random_hex(d->incarnation);
    d->intake_active = json_object();
    d->finalizing = json_object();
}

/* What every role uses: the schemas, the producer and its effects, and one
 * PostgreSQL connection (one server backend) per role that writes: intake,
 * coordinator and ledger run in parallel in PostgreSQL, and a ledger batch
 * never queues intake's statements behind it. Returns 0, or -1 (reported). */
static int open_core(gt_dispatcher_t *d, int roles)
{
    const gt_config_t *cfg = d->cfg;
    char err[4096];
    d->request_schema = gt_schema_embedded("request.v1.json", err, sizeof(err));
    d->task_result_schema =
        d->request_schema ? gt_schema_embedded("task-result.v1.json", err, sizeof(err)) : NULL;
    d->usage_schema =
        d->task_result_schema ? gt_schema_embedded("usage.v1.json", err, sizeof(err)) : NULL;
    d->control_schema =
        d->usage_schema ? gt_schema_embedded("control.v1.json", err, sizeof(err)) : NULL;
    if (!d->control_schema) {
        fprintf(stderr, "gantry-dispatcher: schema: %s\n", err);
        return -1;
    }
    d->producer = gt_producer_new(d->loop, cfg, err, sizeof(err));
    if (!d->producer) {
        fprintf(stderr, "gantry-dispatcher: kafka producer: %s\n", err);
        return -1;
    }
    d->effects = gt_effects_new(d->loop, d->producer);
    if (!d->effects) {
        fprintf(stderr, "gantry-dispatcher: out of memory\n");
        return -1;
    }
    if (cfg->pg_conninfo) {
        d->pg = gt_pg_new(d->loop, cfg->pg_conninfo);
        if (roles & ROLE_COORD)
            d->pg_coord = gt_pg_new(d->loop, cfg->pg_conninfo);
        if (roles & ROLE_LEDGER)
            d->pg_ledger = gt_pg_new(d->loop, cfg->pg_conninfo);
        if (!d->pg || ((roles & ROLE_COORD) && !d->pg_coord) ||
            ((roles & ROLE_LEDGER) && !d->pg_ledger)) {
            fprintf(stderr, "gantry-dispatcher: postgres: out of memory\n");
            return -1;
        }
    }
    return 0;
}

/* The roles asked for: the consumer of requests, task results and cancels,
 * the coordinator, the router and the cache, the ledger, the reaper and
 * moderation. Returns 0, or -1
 * (reported). */
static int open_roles(gt_dispatcher_t *d, int roles)
{
    const gt_config_t *cfg = d->cfg;
    char err[4096];
    if (roles & (ROLE_INTAKE | ROLE_COORD)) {
        const char *topics[4] = {NULL, NULL, NULL, NULL};
        int n = 0;
        if (roles & ROLE_INTAKE)
            topics[n++] = cfg->topics.requests;
        if (roles & ROLE_COORD)
            topics[n++] = cfg->topics.task_results;
        if (roles & ROLE_COORD) /* cancels finish jobs: the coordinator's */
            topics[n++] = cfg->topics.control;
        gt_consumer_opts_t copts = {.group_id = cfg->group_dispatcher,
                                    .topics = topics,
                                    .cb = on_message,
                                    .arg = d,
                                    .commit_interval_ms = cfg->commit_interval_ms,
                                    .instance_id = d->id};
        d->consumer = gt_consumer_new(d->loop, cfg, &copts, err, sizeof(err));
        if (!d->consumer) {
            fprintf(stderr, "gantry-dispatcher: kafka consumer: %s\n", err);
            return -1;
        }
    }
    if ((roles & ROLE_INTAKE) && gt_intake_open(d) != 0) {
        fprintf(stderr, "gantry-dispatcher: intake: out of memory\n");
        return -1;
    }
    if ((roles & ROLE_COORD) && !(d->coordinator = gt_coordinator_new(d))) {
        fprintf(stderr, "gantry-dispatcher: coordinator: out of memory\n");
        return -1;
    }
    if ((roles & (ROLE_INTAKE | ROLE_COORD)) && !(d->router = gt_router_new(gt_clock_mono_ms()))) {
        fprintf(stderr, "gantry-dispatcher: router: out of memory\n");
        return -1;
    }
    int oom = 0;
    if ((roles & (ROLE_INTAKE | ROLE_COORD)) && !(d->release = gt_release_new(d, &oom)) && oom) {
        fprintf(stderr, "gantry-dispatcher: release: out of memory\n");
        return -1;
    }
    if ((roles & (ROLE_INTAKE | ROLE_COORD)) && !(d->cache = gt_cache_new(d))) {
        fprintf(stderr, "gantry-dispatcher: cache: out of memory\n");
        return -1;
    }
    if ((roles & ROLE_LEDGER) && !(d->ledger = gt_ledger_new(d, err, sizeof(err)))) {
        fprintf(stderr, "gantry-dispatcher: ledger: %s\n", err);
        return -1;
    }
    if ((roles & ROLE_REAPER) && !(d->reaper = gt_reaper_new(d, err, sizeof(err)))) {
        fprintf(stderr, "gantry-dispatcher: reaper: %s\n", err);
        return -1;
    }
    if ((roles & (ROLE_INTAKE | ROLE_COORD)) &&
        !(d->moderation = gt_moderation_new(d->loop, cfg))) {
        fprintf(stderr, "gantry-dispatcher: moderation: out of memory\n");
        return -1;
    }
    if ((roles & ROLE_INTAKE) && !(d->ratelimit = gt_ratelimit_new(d))) {
        fprintf(stderr, "gantry-dispatcher: rate limits: out of memory\n");
        return -1;
    }
    if (d->pg && !(d->backlog = gt_backlog_new(d))) {
        fprintf(stderr, "gantry-dispatcher: backlog: out of memory\n");
        return -1;
    }
    return 0;
}

/* Signals, the drain tick, the stats, /health /ready /metrics and the span
 * exporter. Returns 0, or -1 (reported) when the admin server cannot open. */
static int start_process(app_t *a, int admin_port)
{
    uv_loop_t *loop = a->d.loop;
    char err[4096];
    uv_signal_init(loop, &a->sigterm);
    uv_signal_init(loop, &a->sigint);
    uv_signal_init(loop, &a->sighup);
    a->sigterm.data = a->sigint.data = a->sighup.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sighup, on_sighup, SIGHUP);
    uv_timer_init(loop, &a->drain);
    a->drain.data = a;
    uv_timer_start(&a->drain, on_drain_tick, 50, 50);
    gt_stats_init();
    if (gt_admin_open(a->cfg, admin_port, a->d.producer, a->d.pg != NULL, &a->admin, err,
                      sizeof(err)) != 0) {
        fprintf(stderr, "gantry-dispatcher: %s\n", err);
        return -1;
    }
    if (gt_trace_export_start(loop, a->cfg, "gantry-dispatcher") != 0)
        gt_warn("tracing: cannot start the OTLP exporter; spans are not exported");
    return 0;
}

/* After a failed start: closes what was opened and lets the loop finish. */
static void abort_start(gt_dispatcher_t *d)
{
    if (d->consumer)
        gt_consumer_close_handles(d->consumer);
    if (d->ledger)
        gt_ledger_close(d->ledger);
    gt_coordinator_close(d->coordinator);
    gt_release_close(d->release);
    gt_cache_close(d->cache);
    gt_ratelimit_close(d->ratelimit);
    gt_backlog_close(d->backlog);
    gt_moderation_free(d->moderation);
    pg_free_all(d);
    gt_effects_close(d->effects);
    if (d->producer)
        gt_producer_close_handles(d->producer);
    uv_run(d->loop, UV_RUN_DEFAULT);
}

/* Frees everything once the loop has ended. */
static void free_all(app_t *a)
{
    gt_dispatcher_t *d = &a->d;
    gt_admin_stop(a->admin);
    /* Producer first: its last delivery reports mark messages done, which
     * the consumers then commit as they leave their groups. */
    if (d->producer)
        gt_producer_free(d->producer, 10000);
    if (d->consumer)
        gt_consumer_free(d->consumer);
    gt_effects_free(d->effects);
    gt_release_free(d->release); /* after the producer's last reports */
    d->release = NULL;
    if (d->ledger)
        gt_ledger_free(d->ledger);
    if (d->reaper)
        gt_reaper_free(d->reaper);
    gt_coordinator_free(d->coordinator);
    gt_cache_free(d->cache);
    gt_ratelimit_free(d->ratelimit);
    gt_backlog_free(d->backlog);
    gt_router_free(d->router);
    gt_schema_free(d->request_schema);
    gt_schema_free(d->task_result_schema);
    gt_schema_free(d->usage_schema);
    gt_schema_free(d->control_schema);
    json_decref(d->intake_active);
    json_decref(d->finalizing);
    gt_pgbatch_free(d->queued); /* their connections are freed: nothing in flight */
    gt_pgbatch_free(d->completed);
    gt_pgbatch_free(d->inserted);
    gt_pgbatch_free(d->applied);
    uv_loop_close(d->loop);
    gt_config_free(a->cfg);
    gt_metrics_free();
}

int main(int argc, char **argv)
{
    args_t args = {.config = "gantry.json",
                   .roles = ROLE_INTAKE | ROLE_COORD | ROLE_LEDGER | ROLE_REAPER,
                   .admin_port = -1};
    int rc = parse_args(argc, argv, &args);
    if (rc >= 0)
        return rc;
    gt_config_t *cfg = load_config(&args);
    if (!cfg)
        return 1;
    gt_log_init("gantry-dispatcher", (gt_log_level_t)gt_log_parse_level(cfg->log_level));
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP,
           SIG_IGN); /* a reload sent while starting must not kill us; the handler comes later */

    static app_t a;
    gt_dispatcher_t *d = &a.d;
    d->loop = uv_default_loop();
    d->cfg = a.cfg = cfg;
    identify(d, args.id);
    rc = 1;
    if (open_core(d, args.roles) != 0 || open_roles(d, args.roles) != 0 ||
        start_process(&a, args.admin_port) != 0)
        goto out;
    gt_info("dispatcher %s started (incarnation %s)", d->id, d->incarnation);
    uv_run(d->loop, UV_RUN_DEFAULT);
    gt_info("dispatcher %s stopped: %ld accepted, %ld duplicate, %ld dead letters, %ld results",
            d->id, d->requests_accepted, d->requests_duplicate, d->dead_letters,
            d->results_published);
    rc = 0;
out:
    if (rc != 0)
        abort_start(d);
    free_all(&a);
    return rc;
}
