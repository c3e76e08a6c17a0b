/* providers.c - gantry-bench-providers: one worker against gantry-mock-openai at a
 * fixed latency: N tasks (default 20,000) with up to M in flight (default
 * 2,000). Prints tasks/s, p50/p99 latency added over the mock's latency (the
 * worker's total_ms per task minus the mock's latency), the worker's peak RSS
 * and RSS per in-flight task ((peak - idle) / in-flight).
 *   gantry-bench-providers [--count N] [--in-flight M] [--latency-ms L] [--hostedai]
 * --hostedai: the tasks run on the HostedAI runtime against gantry-mock-hostedai
 * (allocate, infer at the latency, release), and allocate/release times are printed.
 * Run from the build directory's parent or set GANTRY_BUILD_DIR/GANTRY_SOURCE_DIR
 * (bench/providers.sh does it). */
#include <curl/curl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"

static long rss_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, field, strlen(field)) == 0)
            kb = atol(line + strlen(field));
    if (f)
        fclose(f);
    return kb;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0, add = size * n;
    char *grown = realloc(*buf, old + add + 1);
    if (!grown)
        return 0;
    memcpy(grown + old, p, add);
    grown[old + add] = '\0';
    *buf = grown;
    return add;
}

/* The mock's peak of concurrent requests (what the worker really had in
 * flight), and how late the mock itself queued its delayed replies. */
static long mock_peak(const char *addr, double *late_avg, long *late_max)
{
    char url[128], *body = NULL;
    long peak = -1;
    *late_avg = -1;
    *late_max = -1;
    snprintf(url, sizeof(url), "http://%s/v1/stats", addr);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    if (curl_easy_perform(c) == CURLE_OK && body) {
        json_t *s = json_loads(body, 0, NULL);
        json_t *pk = json_object_get(s, "peak_concurrent");
        peak = (long)json_integer_value(pk ? pk : json_object_get(s, "peak_concurrent_requests"));
        json_t *srv = json_object_get(s, "server");
        *late_avg = json_number_value(json_object_get(srv, "reply_late_avg_ms"));
        *late_max = (long)json_integer_value(json_object_get(srv, "reply_late_max_ms"));
        json_decref(s);
    }
    curl_easy_cleanup(c);
    free(body);
    return peak;
}

/* utime + stime of pid in ms (from /proc/PID/stat), -1 if unreadable. */
static long cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int count = 20000, in_flight = 2000, latency = 50, hostedai = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--hostedai")) {
            hostedai = 1; /* allocate, infer, release at gantry-mock-hostedai */
            for (int j = i; j + 1 < argc; j++)
                argv[j] = argv[j + 1];
            argc--;
            i--;
        }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--count"))
            count = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--in-flight"))
            in_flight = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--latency-ms"))
            latency = atoi(argv[i + 1]);
    }
    if (count < 1 || in_flight < 1 || latency < 0) {
        fprintf(stderr,
                "usage: gantry-bench-providers [--count N] [--in-flight M] [--latency-ms L]\n");
        return 2;
    }
    const char *log = th_tmpfile(".log", "");
    th_proc_t kafka, mock, worker;
    char bootstrap[256], addr[64], lat[32], line[128], cfg[2048], mif[16];
    const char *kargv[] = {th_bin("tools/gantry-kafka-dev"), "--brokers", "1", NULL};
    snprintf(lat, sizeof(lat), "%d-%d", latency, latency);
    const char *oargv[] = {
        th_bin("tools/gantry-mock-openai"), "--port", "0", "--latency-ms", lat, NULL};
    const char *hargv[] = {th_bin("tools/gantry-mock-hostedai"),
                           "--port",
                           "0",
                           "--api-key",
                           "bench",
                           "--latency-ms",
                           lat,
                           "--fail-rate",
                           "0",
                           "--capacity-tflops",
                           "100000",
                           "--vram-mb",
                           "100000000",
                           NULL};
    const char **margv = hostedai ? hargv : oargv;
    if (th_proc_start(&kafka, kargv, log) ||
        th_proc_wait_line(&kafka, "bootstrap=", bootstrap, sizeof(bootstrap), 20000) ||
        th_proc_start(&mock, margv, log) ||
        th_proc_wait_line(&mock, "listening=", addr, sizeof(addr), 20000)) {
        fprintf(stderr, "bench: kafka-dev or the mock did not start (log %s)\n", log);
        return 1;
    }
    snprintf(cfg, sizeof(cfg),
             "{\"kafka\": {\"bootstrap_servers\": \"%s\","
             "  \"properties\": {\"socket.nagle.disable\": \"true\"},"
             "  \"consumer_properties\": {\"queued.max.messages.kbytes\": \"65536\","
             "    \"fetch.wait.max.ms\": \"5\", \"fetch.error.backoff.ms\": \"5\"},"
             "  \"producer_properties\": {\"linger.ms\": \"0\"}},"
             " \"providers\": {\"mock\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\","
             "   \"api_key\": \"bench\"}},"
             " \"pools\": {\"bench-pool\": {\"endpoint\": \"http://%s\", \"api_key\": \"bench\"}},"
             " \"models\": {\"bench-model\": %s},"
             " \"worker\": {\"heartbeat_ms\": 1000}, \"log\": {\"level\": \"warn\"}}",
             bootstrap, addr, addr,
             hostedai ? "{\"runtime\": \"hostedai\", \"pool\": \"bench-pool\", \"lane\": \"bench\","
                        " \"requirements\": {\"tflops\": 1, \"vram_mb\": 100}}"
                      : "{\"provider\": \"mock\", \"lane\": \"bench\"}");
    const char *cfgfile = th_tmpfile(".json", cfg);
    snprintf(mif, sizeof(mif), "%d", in_flight);
    const char *wargv[] = {th_bin("workers/gantry-worker"),
                           "--config",
                           cfgfile,
                           "--id",
                           "bench-w",
                           "--max-in-flight",
                           mif,
                           NULL};
    if (th_proc_start(&worker, wargv, log) ||
        th_proc_wait_line(&worker, "worker_id=", line, sizeof(line), 20000)) {
        fprintf(stderr, "bench: the worker did not start (log %s)\n", log);
        return 1;
    }
    char err[512];
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    rd_kafka_conf_set(pc, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(pc, "linger.ms", "5", err, sizeof(err));
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
    rd_kafka_conf_t *cc = rd_kafka_conf_new();
    rd_kafka_conf_set(cc, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(cc, "group.id", "bench-providers-reader", err, sizeof(err));
    rd_kafka_conf_set(cc, "auto.offset.reset", "earliest", err, sizeof(err));
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof(err));
    rd_kafka_poll_set_consumer(cons);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tl, "gantry.task-results", RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(cons, tl);
    rd_kafka_topic_partition_list_destroy(tl);

    /* Idle footprint: connected, consuming, nothing in flight. */
    for (int64_t end = th_now_ms() + 2000; th_now_ms() < end;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 100);
        if (m)
            rd_kafka_message_destroy(m);
    }
    long idle_kb = rss_kb(worker.pid, "VmRSS:");
    long cpu0 = cpu_ms(worker.pid), mock0 = cpu_ms(mock.pid), kafka0 = cpu_ms(kafka.pid);

    int64_t t0 = th_now_ms();
    for (int i = 0; i < count; i++) {
        char id[32], now[40], *v;
        snprintf(id, sizeof(id), "b-%06d", i);
        json_t *t = json_pack(
            "{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:{s:i}, s:s}", "schema",
            "gantry.task.v1", "task_id", id, "request_id", id, "tenant_id", "bench", "index", 0,
            "kind", "generate", "model", "bench-model", "runtime", hostedai ? "hostedai" : "openai",
            "lane", "bench", "input", "write one line about queues", "parameters", "max_tokens", 16,
            "created_at", gt_clock_fmt(gt_clock_wall_ms(), now, sizeof(now)));
        v = json_dumps(t, JSON_COMPACT);
        while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("gantry.tasks.bench"),
                                 RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(v, strlen(v)),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(prod, 10);
        free(v);
        json_decref(t);
        rd_kafka_poll(prod, 0);
    }
    rd_kafka_flush(prod, 30000);

    int64_t *added = calloc((size_t)count, sizeof(int64_t));
    int64_t *before = calloc((size_t)count, sizeof(int64_t)); /* total - inference */
    int64_t *call = calloc((size_t)count, sizeof(int64_t));   /* inference - latency */
    int64_t *alloc = calloc((size_t)count, sizeof(int64_t));  /* HostedAI allocate_ms */
    int64_t *rel = calloc((size_t)count, sizeof(int64_t));    /* HostedAI release_ms */
    int done = 0, ok = 0;
    long peak_kb = idle_kb;
    int64_t first_ms = 0, last_sample = 0, deadline = th_now_ms() + 600000;
    while (done < count && th_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 100);
        if (th_now_ms() - last_sample >= 50) {
            long kb = rss_kb(worker.pid, "VmRSS:");
            peak_kb = kb > peak_kb ? kb : peak_kb;
            last_sample = th_now_ms();
        }
        if (!m)
            continue;
        if (!m->err) {
            json_t *r = json_loadb(m->payload, m->len, 0, NULL);
            json_t *tm = json_object_get(json_object_get(r, "timings"), "total_ms");
            json_t *im = json_object_get(json_object_get(r, "timings"), "inference_ms");
            if (r && done < count) {
                if (done == 0)
                    first_ms = th_now_ms();
                json_t *tg = json_object_get(r, "timings");
                alloc[done] = json_integer_value(json_object_get(tg, "allocate_ms"));
                rel[done] = json_integer_value(json_object_get(tg, "release_ms"));
                before[done] = json_integer_value(tm) - json_integer_value(im);
                call[done] = json_integer_value(im) - latency;
                added[done++] = json_integer_value(tm) - latency;
                ok += !strcmp(json_string_value(json_object_get(r, "status")) ?: "", "succeeded");
            }
            json_decref(r);
        }
        rd_kafka_message_destroy(m);
    }
    int64_t elapsed = th_now_ms() - t0;
    long cpu1 = cpu_ms(worker.pid), mock1 = cpu_ms(mock.pid), kafka1 = cpu_ms(kafka.pid);
    long hwm_kb = rss_kb(worker.pid, "VmHWM:");
    peak_kb = hwm_kb > peak_kb ? hwm_kb : peak_kb;
    qsort(added, (size_t)done, sizeof(int64_t), cmp_i64);
    qsort(before, (size_t)done, sizeof(int64_t), cmp_i64);
    qsort(call, (size_t)done, sizeof(int64_t), cmp_i64);
    qsort(alloc, (size_t)done, sizeof(int64_t), cmp_i64);
    qsort(rel, (size_t)done, sizeof(int64_t), cmp_i64);
    double secs = (double)elapsed / 1000.0;
    printf("bench/providers: %d tasks, %d in flight, mock latency %d ms\n", count, in_flight,
           latency);
    printf("  completed        %d (%d succeeded) in %.2f s\n", done, ok, secs);
    printf("  first result     %.2f s after the first produce; steady %.0f tasks/s after it\n",
           (double)(first_ms - t0) / 1000.0,
           first_ms && done > 1 ? (done - 1) * 1000.0 / (double)(t0 + elapsed - first_ms) : 0.0);
    printf("  tasks/s          %.0f (ideal %d in flight / %d ms = %.0f)\n", done / secs, in_flight,
           latency, latency ? in_flight * 1000.0 / latency : 0.0);
    if (done) {
        printf("  added latency    p50 %lld ms, p99 %lld ms (worker total_ms - %d ms)\n",
               (long long)added[done / 2], (long long)added[(size_t)(done * 0.99)], latency);
        printf("    before the call p50 %lld ms, p99 %lld ms (total_ms - inference_ms)\n",
               (long long)before[done / 2], (long long)before[(size_t)(done * 0.99)]);
        printf("    in the call     p50 %lld ms, p99 %lld ms (inference_ms - %d ms)\n",
               (long long)call[done / 2], (long long)call[(size_t)(done * 0.99)], latency);
        if (hostedai)
            printf("    allocate        p50 %lld ms, p99 %lld ms; release p50 %lld ms, p99 %lld ms "
                   "(the mock adds nothing to them)\n",
                   (long long)alloc[done / 2], (long long)alloc[(size_t)(done * 0.99)],
                   (long long)rel[done / 2], (long long)rel[(size_t)(done * 0.99)]);
        printf("  worker CPU       %.3f ms per task (%ld ms utime+stime)\n",
               (double)(cpu1 - cpu0) / done, cpu1 - cpu0);
        printf("  mock, kafka CPU  %.3f, %.3f ms per task\n", (double)(mock1 - mock0) / done,
               (double)(kafka1 - kafka0) / done);
    }
    double late_avg;
    long late_max, peak = mock_peak(addr, &late_avg, &late_max);
    printf("  provider peak    %ld concurrent requests\n", peak);
    printf("  mock lateness    %.1f ms on average, %ld ms at most (its replies past their due "
           "time)\n",
           late_avg, late_max);
    printf("  worker RSS       idle %.1f MiB, peak %.1f MiB\n", idle_kb / 1024.0, peak_kb / 1024.0);
    printf("  RSS per task     %.1f KiB ((peak - idle) / %d in flight)\n",
           (double)(peak_kb - idle_kb) / in_flight, in_flight);
    free(added);
    free(before);
    free(call);
    free(alloc);
    free(rel);
    rd_kafka_consumer_close(cons);
    rd_kafka_destroy(cons);
    rd_kafka_destroy(prod);
    th_proc_stop(&worker, SIGTERM, 30000);
    th_proc_stop(&mock, SIGTERM, 10000);
    th_proc_stop(&kafka, SIGTERM, 10000);
    return done == count && ok == count ? 0 : 1;
}
