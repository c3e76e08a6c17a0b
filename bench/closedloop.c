/* closedloop.c - gantry-bench-closedloop: keeps N requests outstanding on gantry.requests (as
 * `wrk -cN` does for HTTP), times each from its produce to its result on gantry.results, and
 * prints requests/s, throughput / ideal (N / provider latency), added p50/p99 over the provider
 * latency and the CPU milliseconds per request of each process named with --proc (from /proc).
 *   gantry-bench-closedloop --bootstrap B [--in-flight N] [--duration S] [--warmup S]
 *       [--latency-ms L] [--model M] [--proc NAME=PID[+]]...
 * NAME=PID+ counts PID and its children (PostgreSQL: the postmaster and its backends).
 * bench/closedloop.sh starts a cluster on the shipped configuration and runs it. */
#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 16

typedef struct proc {
    char name[32];
    int pid;
    int tree;          /* 1: the pid and its children */
    double cpu0, cpu1; /* CPU seconds at the start and end of the measured window */
} proc_t;

/* CPU seconds (user + system) of one pid, -1 if it is gone. */
static double pid_cpu(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ppid(4) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int pid_ppid(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int ppid = -1;
    if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1)
        return -1;
    return ppid;
}

/* CPU seconds of a process, with its children's if tree (live children only: PostgreSQL's
 * backends live as long as their connections, which outlast the run). */
static double proc_cpu(const proc_t *p)
{
    double s = pid_cpu(p->pid);
    if (!p->tree || s < 0)
        return s;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid > 0 && pid_ppid(pid) == p->pid) {
            double c = pid_cpu(pid);
            s += c > 0 ? c : 0;
        }
    }
    if (d)
        closedir(d);
    return s;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    /* The driver itself must not wait for timers either. */
    const char *kv[][2] = {{"bootstrap.servers", bootstrap},
                           {"socket.nagle.disable", "true"},
                           {"linger.ms", "0"},
                           {"fetch.wait.max.ms", "5"},
                           {"fetch.error.backoff.ms", "5"},
                           {"enable.auto.commit", "false"},
                           {"group.id", "gantry-bench-closedloop"}};
    size_t n = type == RD_KAFKA_PRODUCER ? 3 : sizeof(kv) / sizeof(kv[0]);
    for (size_t i = 0; i < n; i++) {
        if (type == RD_KAFKA_CONSUMER && !strcmp(kv[i][0], "linger.ms"))
            continue;
        if (rd_kafka_conf_set(c, kv[i][0], kv[i][1], err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "closedloop: %s: %s\n", kv[i][0], err);
            rd_kafka_conf_destroy(c);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "closedloop: rd_kafka_new: %s\n", err);
        rd_kafka_conf_destroy(c);
    }
    return rk;
}

/* Assigns every partition of topic at its current end, so only results produced from now on
 * are read (no group join, no rebalance delay). Returns 0 or -1. */
static int assign_at_end(rd_kafka_t *cons, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(cons, topic, NULL);
    int rc = -1;
    if (rd_kafka_metadata(cons, 0, t, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR || !md ||
        md->topic_cnt != 1 || md->topics[0].partition_cnt < 1)
        goto out;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int64_t lo = 0, hi = 0;
        int32_t part = md->topics[0].partitions[i].id;
        if (rd_kafka_query_watermark_offsets(cons, topic, part, &lo, &hi, 10000)) {
            rd_kafka_topic_partition_list_destroy(l);
            goto out;
        }
        rd_kafka_topic_partition_list_add(l, topic, part)->offset = hi;
    }
    rc = rd_kafka_assign(cons, l) ? -1 : 0;
    rd_kafka_topic_partition_list_destroy(l);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return rc;
}

/* Request ids are "cl-<run>-<seq>": a run's own (an earlier run's ids would be duplicates,
 * which the dispatcher answers no more). */
static char run_id[24];

static int produce(rd_kafka_t *prod, long seq, const char *model, int64_t *sent_at)
{
    char id[64], v[512];
    snprintf(id, sizeof(id), "cl-%s-%ld", run_id, seq);
    int n = snprintf(v, sizeof(v),
                     "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s\",\"tenant_id\":"
                     "\"tenant-%ld\",\"kind\":\"generate\",\"model\":\"%s\",\"input\":"
                     "\"summarise the quarterly report in plain terms\",\"parameters\":"
                     "{\"max_tokens\":16}}",
                     id, seq % 5, model);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sent_at[seq] = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    rd_kafka_resp_err_t e;
    while ((e = rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("gantry.requests"),
                                  RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(v, (size_t)n),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(prod, 1);
    return e ? -1 : 0;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    const char *bootstrap = NULL, *model = "bench-model";
    int in_flight = 200, latency = 50;
    double duration = 20, warmup = 5;
    proc_t procs[MAX_PROCS];
    int nprocs = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--bootstrap"))
            bootstrap = v;
        else if (!strcmp(k, "--in-flight"))
            in_flight = atoi(v);
        else if (!strcmp(k, "--duration"))
            duration = atof(v);
        else if (!strcmp(k, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(k, "--latency-ms"))
            latency = atoi(v);
        else if (!strcmp(k, "--model"))
            model = v;
        else if (!strcmp(k, "--proc") && nprocs < MAX_PROCS) {
            proc_t *p = &procs[nprocs];
            const char *eq = strchr(v, '=');
            if (!eq || eq - v >= (long)sizeof(p->name))
                goto usage;
            memset(p, 0, sizeof(*p));
            memcpy(p->name, v, (size_t)(eq - v));
            p->pid = atoi(eq + 1);
            p->tree = eq[strlen(eq) - 1] == '+';
            nprocs++;
        } else
            goto usage;
    }
    if (!bootstrap || in_flight < 1 || duration <= 0 || warmup < 0 || latency < 0)
        goto usage;

    snprintf(run_id, sizeof(run_id), "%x%x", (unsigned)getpid(), (unsigned)time(NULL));
    rd_kafka_t *prod = client(RD_KAFKA_PRODUCER, bootstrap);
    rd_kafka_t *cons = client(RD_KAFKA_CONSUMER, bootstrap);
    if (!prod || !cons || assign_at_end(cons, "gantry.results") < 0) {
        fprintf(stderr, "closedloop: cannot reach gantry.results at %s\n", bootstrap);
        return 1;
    }
    size_t cap = 20000000;
    int64_t *sent_at = calloc(cap, sizeof(int64_t));
    int64_t *lat = calloc(cap, sizeof(int64_t));
    if (!sent_at || !lat) {
        free(sent_at);
        free(lat);
        return 1;
    }
    long seq = 0, measured = 0, measured_ok = 0, first_measured = -1;
    for (; seq < in_flight; seq++)
        produce(prod, seq, model, sent_at);
    int64_t start = now_us(), t_warm = start + (int64_t)(warmup * 1e6),
            t_end = t_warm + (int64_t)(duration * 1e6), t_measure0 = 0;
    int measuring = 0;
    while (1) {
        int64_t now = now_us();
        if (!measuring && now >= t_warm) {
            measuring = 1;
            t_measure0 = now;
            first_measured = seq; /* requests sent from here on are the measured ones */
            for (int i = 0; i < nprocs; i++)
                procs[i].cpu0 = proc_cpu(&procs[i]);
        }
        if (now >= t_end)
            break;
        rd_kafka_poll(prod, 0);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 1);
        if (!m)
            continue;
        size_t pl = strlen(run_id) + 4;
        if (!m->err && m->key_len > pl && !memcmp(m->key, "cl-", 3) &&
            !memcmp((char *)m->key + 3, run_id, pl - 4) && ((char *)m->key)[pl - 1] == '-') {
            char k[64];
            size_t kl = m->key_len < sizeof(k) - 1 ? m->key_len : sizeof(k) - 1;
            memcpy(k, m->key, kl);
            k[kl] = '\0';
            long s = atol(k + pl);
            if (s >= 0 && s < seq && sent_at[s]) {
                int64_t us = now_us() - sent_at[s];
                sent_at[s] = 0;
                if (measuring && s >= first_measured) {
                    lat[measured++] = us;
                    measured_ok += memmem(m->payload, m->len, "\"succeeded\"", 11) != NULL;
                }
                if ((size_t)seq + 1 < cap) {
                    produce(prod, seq, model, sent_at);
                    seq++;
                }
            }
        }
        rd_kafka_message_destroy(m);
    }
    int64_t t_measure1 = now_us();
    for (int i = 0; i < nprocs; i++)
        procs[i].cpu1 = proc_cpu(&procs[i]);
    /* The rate counts completions of requests sent inside the window only (the first
     * latency's worth of the window under-counts by at most N requests). */
    double secs = (double)(t_measure1 - t_measure0) / 1e6;
    qsort(lat, (size_t)measured, sizeof(int64_t), cmp_i64);
    double rps = measured / secs, ideal = latency ? in_flight * 1000.0 / latency : 0;
    double lat_ms = latency;
    printf("bench/closedloop: %d in flight, provider latency %d ms, %.1f s measured after %.1f s "
           "warm-up\n",
           in_flight, latency, secs, warmup);
    printf("  completed        %ld (%ld succeeded)\n", measured, measured_ok);
    printf("  requests/s       %.0f (ideal %.0f, ratio %.2f)\n", rps, ideal,
           ideal ? rps / ideal : 0);
    if (measured) {
        size_t mid = (size_t)measured / 2, p99i = (size_t)((double)measured * 0.99);
        double p50 = (double)lat[mid] / 1000.0, p99 = (double)lat[p99i] / 1000.0;
        printf("  end to end       p50 %.1f ms, p99 %.1f ms\n", p50, p99);
        printf("  added            p50 %+.1f ms, p99 %+.1f ms (over %d ms)\n", p50 - lat_ms,
               p99 - lat_ms, latency);
    }
    double gantry = 0, total = 0;
    printf("  CPU per request  (ms; Gantry's own = dispatcher, workers, postgres)\n");
    for (int i = 0; i < nprocs; i++) {
        double ms = measured ? (procs[i].cpu1 - procs[i].cpu0) * 1000.0 / measured : 0;
        printf("    %-14s %.3f\n", procs[i].name, ms);
        total += ms;
        if (!strncmp(procs[i].name, "dispatcher", 10) || !strncmp(procs[i].name, "worker", 6) ||
            !strncmp(procs[i].name, "postgres", 8))
            gantry += ms;
    }
    printf("    %-14s %.3f\n    %-14s %.3f\n", "gantry", gantry, "all listed", total);
    free(sent_at);
    free(lat);
    rd_kafka_flush(prod, 5000);
    rd_kafka_destroy(cons);
    rd_kafka_destroy(prod);
    return measured > 0 ? 0 : 1;
usage:
    fprintf(stderr, "usage: gantry-bench-closedloop --bootstrap B [--in-flight N] [--duration S]"
                    " [--warmup S] [--latency-ms L] [--model M] [--proc NAME=PID[+]]...\n");
    return 2;
}
