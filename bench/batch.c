/* batch.c - bench/batch: a 50,000-line OpenAI batch through gantry-api on the
 * real pipeline (embedded Kafka, PostgreSQL, dispatcher, 2 workers, mock
 * HostedAI at 10 ms, no faults), driven by the openai SDK (bench/batch.mjs).
 * Prints time from create to completed, requests/s and the peak RSS (VmHWM)
 * of gantry-api and of the dispatcher.
 *   bench/batch.sh [LINES]   (default 50000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

#include "cluster.h"

static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

int main(int argc, char **argv)
{
    const char *lines = argc > 1 ? argv[1] : "50000";
    th_cluster_t cl;
    /* 24 partitions: the mock brokers keep a bounded log per partition, and
     * 50,000 requests' task results outgrow 6 before the dispatcher reads them. */
    th_cluster_opts_t o = {.workers = 2,
                           .latency = "10-10",
                           .worker_in_flight = 256,
                           .kafka_partitions = 24,
                           .extra_config =
                               "{\"api\": {\"port\": 0, \"models\": {\"*\": \"small\"}},"
                               " \"log\": {\"level\": \"warn\"}}"};
    th_proc_t api = {0}, key = {0}, node = {0};
    char addr[128], line[256], url[160], bench[4096], log[320];
    int rc = 1;
    if (th_cluster_start(&cl, &o) != 0)
        goto out;
    snprintf(log, sizeof(log), "%s/api.log", cl.logdir);
    const char *aargv[] = {th_bin("api/gantry-api"), "--config", cl.config, NULL};
    if (th_proc_start(&api, aargv, log) ||
        th_proc_wait_line(&api, "api=", addr, sizeof(addr), 20000))
        goto out;
    const char *kargv[] = {
        th_bin("tools/gantry"), "keys", "create", "--tenant", "bench", "--config", cl.config, NULL};
    if (th_proc_start(&key, kargv, NULL) ||
        th_proc_wait_line(&key, "key_", line, sizeof(line), 10000))
        goto out;
    th_proc_stop(&key, 0, 10000);
    snprintf(url, sizeof(url), "http://%s", addr);
    setenv("GANTRY_API_URL", url, 1);
    setenv("KEY_A", strchr(line, ' ') + 1, 1);
    setenv("GANTRY_SDK_DIR", th_src("tests/sdk"), 1);
    const char *nargv[] = {"/usr/bin/node", th_src("bench/batch.mjs"), lines, NULL};
    if (th_proc_start(&node, nargv, NULL) ||
        th_proc_wait_line(&node, "bench=", bench, sizeof(bench), 3600000))
        goto out;
    th_proc_stop(&node, 0, 10000);
    printf("batch: %s\n", bench);
    printf("batch: peak RSS gantry-api %ld KiB, dispatcher %ld KiB\n", vm_hwm_kb(api.pid),
           vm_hwm_kb(cl.dispatcher.pid));
    rc = 0;
out:
    if (api.pid)
        th_proc_stop(&api, SIGTERM, 20000);
    th_cluster_stop(&cl);
    return rc;
}
