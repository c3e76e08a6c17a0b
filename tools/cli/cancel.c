/* cancel.c - `gantry cancel REQUEST_ID`: publishes a gantry.control.v1 cancel
 * on the control topic through the same producer path as `gantry submit`. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void cancel_usage(FILE *f)
{
    fprintf(f, "usage: gantry cancel [--config FILE] [--reason TEXT] REQUEST_ID\n"
               "\n"
               "Asks the dispatchers to cancel the job of REQUEST_ID: tasks not started never\n"
               "start, running ones are aborted, the result is `cancelled` with the outputs\n"
               "that had finished. Publishes {\"schema\": \"gantry.control.v1\", \"type\":\n"
               "\"cancel\", ...} on topics.control and waits until it is acknowledged. The\n"
               "answer is an event on topics.events: cancel.accepted, cancel.unknown or\n"
               "cancel.finished (docs/scheduling.md).\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -r, --reason TEXT  why, kept with the job\n");
}

int gt_cli_cancel(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"reason", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *reason = NULL;
    gt_config_t *cfg = NULL;
    json_t *m = NULL;
    char *text = NULL, *topic = NULL, *conf_path = NULL;
    int r, rc = GT_CLI_FAIL;

    while ((r = getopt_long(argc, argv, ":c:r:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'r': reason = optarg; break;
        case 'h': cancel_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("cancel", argv, r);
        }
    }
    if (optind != argc - 1 || !argv[optind][0])
        return gt_cli_usage_error("cancel", "give exactly one REQUEST_ID");
    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    m = json_pack("{s:s, s:s, s:s}", "schema", "gantry.control.v1", "type", "cancel", "request_id",
                  argv[optind]);
    if (m && reason)
        json_object_set_new(m, "reason", json_string(reason));
    text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    topic = strdup(cfg->topics.control);
    conf_path = strdup(config ? config : GT_CLI_DEFAULT_CONFIG); /* optarg is never NULL */
    if (!text || !topic || !conf_path) {
        fprintf(stderr, "gantry cancel: out of memory\n");
        goto out;
    }
    char *sub[] = {"submit", "--config", conf_path, "--topic", topic, text, NULL};
    optind = 0; /* glibc: getopt starts over for the submit command */
    rc = gt_cli_submit(6, sub);
    if (rc == GT_CLI_OK)
        printf("cancel requested for %s (answered on %s)\n", argv[argc - 1], cfg->topics.events);
out:
    json_decref(m);
    free(text);
    free(topic);
    free(conf_path);
    gt_config_free(cfg);
    return rc;
}
