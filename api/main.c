/* main.c - gantry-api: the OpenAI Batch and Anthropic Message Batches APIs
 * (api/http.c) and the loop that feeds their lines to the pipeline (api/pump.c). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "api.h"
#include "effect.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pump.h"

static const char usage_text[] =
    "usage: gantry-api --config FILE [--port N] [--admin-port N] [--id ID]\n"
    "  Serves POST/GET /v1/files, /v1/batches (OpenAI) and /v1/messages/batches\n"
    "  (Anthropic) on api.host:api.port; batch lines go to the requests topic,\n"
    "  results come back from the results topic (docs/batch-api.md).\n"
    "  --port N        API port (0: any; overrides api.port); prints api=HOST:PORT\n"
    "  --admin-port N  /health, /ready, /metrics on N (overrides admin.port)\n"
    "  --id ID         process id in events (default api-HOST-PID)\n"
    "  SIGTERM/SIGINT: stop serving, leave undone work to the next start, exit 0.\n";

typedef struct app {
    uv_signal_t sigterm, sigint;
    uv_timer_t ready;
    gt_api_pump_t *pump;
    gt_effects_t *es;
    gt_producer_t *producer;
    gt_admin_t *admin;
    int stopping;
} app_t;

static void on_ready_tick(uv_timer_t *t)
{
    app_t *a = t->data;
    gt_admin_set_ready(a->admin, "postgres", gt_api_pump_connected(a->pump));
}

static void on_signal(uv_signal_t *s, int signum)
{
    app_t *a = s->data;
    if (a->stopping)
        return;
    a->stopping = 1;
    gt_info("signal %d: stopping", signum);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_timer_stop(&a->ready);
    uv_close((uv_handle_t *)&a->ready, NULL);
    gt_admin_set_ready(a->admin, "postgres", 0);
    gt_api_pump_close(a->pump);
    gt_effects_close(a->es);
    gt_producer_close_handles(a->producer);
}

int main(int argc, char **argv)
{
    const char *config = "gantry.json", *id = NULL;
    int admin_port = -1, port = -1, rc = 1;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"port", required_argument, NULL, 'p'},
                                         {"admin-port", required_argument, NULL, 'a'},
                                         {"id", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:p:a:i:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'p':
        case 'a': {
            int v;
            if (gt_admin_parse_port(optarg, &v) != 0) {
                fprintf(stderr, "gantry-api: bad --%s \"%s\"\n", ch == 'p' ? "port" : "admin-port",
                        optarg);
                return 2;
            }
            *(ch == 'p' ? &port : &admin_port) = v;
            break;
        }
        case 'i': id = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "gantry-api: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    char err[4096], source[128];
    gt_api_config_register();
    gt_config_t *cfg = gt_config_load(config, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "gantry-api: %s\n", err);
        return 1;
    }
    gt_api_config_t ac = *cfg->api; /* borrows cfg's strings; --port may override */
    if (port >= 0)
        ac.port = port;
    gt_log_init("gantry-api", (gt_log_level_t)gt_log_parse_level(cfg->log_level));
    if (id) {
        snprintf(source, sizeof(source), "%s", id);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(source, sizeof(source), "api-%s-%d", host, (int)getpid());
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    app_t a = {0};
    gt_api_http_t *http = NULL;
    a.producer = gt_producer_new(loop, cfg, err, sizeof(err));
    if (!a.producer) {
        fprintf(stderr, "gantry-api: kafka: %s\n", err);
        goto out;
    }
    if (!(a.es = gt_effects_new(loop, a.producer)) ||
        !(a.pump = gt_api_pump_new(loop, cfg, &ac, a.es, source, err, sizeof(err)))) {
        fprintf(stderr, "gantry-api: %s\n", a.es ? err : "out of memory");
        goto fail_loop;
    }
    if (gt_admin_open(cfg, admin_port, a.producer, 1, &a.admin, err, sizeof(err)) != 0) {
        fprintf(stderr, "gantry-api: %s\n", err);
        goto fail_loop;
    }
    if (!(http = gt_api_http_start(cfg, &ac, err, sizeof(err)))) {
        fprintf(stderr, "gantry-api: %s\n", err);
        goto fail_loop;
    }
    printf("api=%s:%d\n", ac.host, gt_api_http_port(http));
    fflush(stdout);
    uv_signal_init(loop, &a.sigterm);
    uv_signal_init(loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_timer_init(loop, &a.ready);
    a.ready.data = &a;
    uv_timer_start(&a.ready, on_ready_tick, 100, 500);
    gt_info("gantry-api %s started on %s:%d", source, ac.host, gt_api_http_port(http));
    uv_run(loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out;
fail_loop:
    if (a.pump)
        gt_api_pump_close(a.pump);
    gt_effects_close(a.es);
    gt_producer_close_handles(a.producer);
    uv_run(loop, UV_RUN_DEFAULT);
out:
    gt_api_http_stop(http);
    gt_admin_stop(a.admin);
    if (a.producer)
        gt_producer_free(a.producer, 10000);
    gt_api_pump_free(a.pump);
    gt_effects_free(a.es);
    uv_loop_close(loop);
    gt_config_free(cfg);
    gt_metrics_free();
    return rc;
}
