/* kafka_dev.c - gantry-kafka-dev: librdkafka's mock Kafka cluster served on
 * loopback for development and tests; prints "bootstrap=HOST:PORT" when ready,
 * and takes fault commands (broker down/up, leader moves) on a control channel. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define PROG "gantry-kafka-dev"
#define FWD_BUF_SIZE (64 * 1024)
/* Stop reading one side while the other has this much unwritten. */
#define FWD_HIGH_WATER (1024 * 1024)

typedef struct topic {
    char *name;
    int partitions; /* 0: the --partitions default */
} topic_t;

typedef struct topics {
    topic_t *v;
    size_t n, cap;
} topics_t;

/* One proxied connection: the client side and the broker side. */
typedef struct fwd_conn {
    struct fwd_conn *prev, *next;
    uv_tcp_t client;
    uv_tcp_t upstream;
    uv_connect_t connect;
    int handles; /* initialised handles not yet closed */
    int closing;
} fwd_conn_t;

typedef struct fwd_write {
    uv_write_t req;
    uv_buf_t buf;
    fwd_conn_t *conn;
} fwd_write_t;

typedef struct fwd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct sockaddr_in target;
    fwd_conn_t *conns;
} fwd_t;

/* The control channel: a FIFO (kept open for writing too, so that a writer
 * closing it is no end of file) or stdin. */
typedef struct ctl {
    rd_kafka_mock_cluster_t *mc;
    uv_pipe_t pipe;
    int on;
    char line[1024];
    size_t used;
    int overlong; /* the current line passed sizeof(line): refused whole */
} ctl_t;

static fwd_t fwd;
static int fwd_on;
static ctl_t ctl;
static uv_signal_t sig_int, sig_term;

static void usage(FILE *f);
static int parse_int(const char *s, int min, int max, int *out);
static int topics_add(topics_t *t, const char *name, int partitions);
static void topics_free(topics_t *t);
static int topic_name_ok(const char *name);
static int topics_load(topics_t *t, const char *path);
static int fwd_start(uv_loop_t *loop, int port, const char *bootstraps);
static void fwd_stop(void);
static void fwd_on_connection(uv_stream_t *server, int status);
static void fwd_on_upstream(uv_connect_t *req, int status);
static void fwd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void fwd_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void fwd_on_write(uv_write_t *req, int status);
static void fwd_conn_close(fwd_conn_t *fc);
static void fwd_on_close(uv_handle_t *h);
static int ctl_start(uv_loop_t *loop, const char *path, rd_kafka_mock_cluster_t *mc);
static void ctl_stop(void);
static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void ctl_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void ctl_run(char *line);
static void on_signal(uv_signal_t *h, int signum);

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " [--brokers N] [--port P] [--topics FILE] [--partitions N]\n"
               "       [--control FIFO|-]\n"
               "\n"
               "Serves librdkafka's mock Kafka cluster on 127.0.0.1, creates topics, prints\n"
               "one line \"bootstrap=HOST:PORT[,...]\" on stdout when ready and runs until\n"
               "SIGINT or SIGTERM. Brokers have ids 1..N.\n"
               "\n"
               "  --brokers N     brokers in the cluster (default 1)\n"
               "  --port P        also accept clients on 127.0.0.1:P (forwarded to a broker)\n"
               "                  and print that as the bootstrap address\n"
               "  --topics FILE   topics to create: one \"name [partitions]\" per line,\n"
               "                  '#' starts a comment (default: gantry's topics)\n"
               "  --partitions N  partitions of topics that give no count (with --topics),\n"
               "                  or of every default topic (without --topics)\n"
               "  --control PATH  read commands, one per line, from the FIFO PATH (created\n"
               "                  when missing) or from stdin (\"-\"):\n"
               "                    broker down ID|all  disconnect a broker, refuse new\n"
               "                                        connections (leaders stay put)\n"
               "                    broker up ID|all    accept connections again\n"
               "                    broker rtt ID|all MS  delay a broker's answers\n"
               "                    leader TOPIC PARTITION ID  move a partition's leader\n"
               "                                        (ID -1: leaderless)\n"
               "                    ping                answer only\n"
               "                  each is answered, once applied, by one line on stdout:\n"
               "                  \"ok COMMAND\" or \"error COMMAND: REASON\"\n"
               "  --help          this text\n"
               "\n"
               "Message size limits: the mock brokers of librdkafka 2.0.2 accept a produce of\n"
               "any size (no message.max.bytes or max.message.bytes); the limit that holds\n"
               "is the producing client's own message.max.bytes (1,000,000 by default).\n");
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int topics_add(topics_t *t, const char *name, int partitions)
{
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        topic_t *nv = realloc(t->v, ncap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        t->v = nv;
        t->cap = ncap;
    }
    t->v[t->n].name = strdup(name);
    if (!t->v[t->n].name)
        return -ENOMEM;
    t->v[t->n].partitions = partitions;
    t->n++;
    return 0;
}

static void topics_free(topics_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].name);
    free(t->v);
}

/* Kafka's rule: 1-249 characters of [a-zA-Z0-9._-], not "." or "..". */
static int topic_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 249 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* Returns 0, or -1 after printing one line on stderr. */
static int topics_load(topics_t *t, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int lineno = 0, rc = -1;

    if (!f) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *name, *count, *extra, *save = NULL, *hash;
        int partitions = 0;
        lineno++;
        if ((hash = strchr(line, '#')))
            *hash = '\0';
        name = strtok_r(line, " \t\r\n", &save);
        if (!name)
            continue;
        count = strtok_r(NULL, " \t\r\n", &save);
        extra = strtok_r(NULL, " \t\r\n", &save);
        if (!topic_name_ok(name)) {
            fprintf(stderr, PROG ": %s:%d: bad topic name \"%s\"\n", path, lineno, name);
            goto out;
        }
        if (count && parse_int(count, 1, 100000, &partitions) < 0) {
            fprintf(stderr, PROG ": %s:%d: bad partition count \"%s\"\n", path, lineno, count);
            goto out;
        }
        if (extra) {
            fprintf(stderr, PROG ": %s:%d: expected \"name [partitions]\"\n", path, lineno);
            goto out;
        }
        if (topics_add(t, name, partitions) < 0) {
            fprintf(stderr, PROG ": out of memory\n");
            goto out;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, PROG ": %s: read error\n", path);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

/* ---- TCP forwarder: a fixed port in front of a mock broker ---------------
 * librdkafka 2.0.2's mock brokers listen on random ports. Clients only need
 * the bootstrap connection here: metadata then sends them to the brokers'
 * advertised (random) addresses, also on loopback. */

static int fwd_start(uv_loop_t *loop, int port, const char *bootstraps)
{
    char first[256], *comma, *colon;
    struct sockaddr_in addr;
    int rc;

    snprintf(first, sizeof(first), "%s", bootstraps);
    if ((comma = strchr(first, ',')))
        *comma = '\0';
    colon = strrchr(first, ':');
    if (!colon) {
        fprintf(stderr, PROG ": unexpected mock bootstrap \"%s\"\n", bootstraps);
        return -1;
    }
    *colon = '\0';
    if (uv_ip4_addr(first, atoi(colon + 1), &fwd.target) < 0) {
        fprintf(stderr, PROG ": unexpected mock bootstrap \"%s\"\n", bootstraps);
        return -1;
    }
    fwd.loop = loop;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(loop, &fwd.listener);
    fwd_on = 1;
    if ((rc = uv_tcp_bind(&fwd.listener, (const struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&fwd.listener, 128, fwd_on_connection)) < 0) {
        fprintf(stderr, PROG ": cannot listen on 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void fwd_stop(void)
{
    if (!fwd_on)
        return;
    fwd_on = 0;
    uv_close((uv_handle_t *)&fwd.listener, NULL);
    for (fwd_conn_t *fc = fwd.conns; fc; fc = fc->next)
        fwd_conn_close(fc);
}

static void fwd_on_connection(uv_stream_t *server, int status)
{
    fwd_conn_t *fc;
    if (status < 0)
        return;
    fc = calloc(1, sizeof(*fc));
    if (!fc)
        return;
    uv_tcp_init(fwd.loop, &fc->client);
    uv_tcp_init(fwd.loop, &fc->upstream);
    fc->client.data = fc->upstream.data = fc;
    fc->handles = 2;
    fc->next = fwd.conns;
    if (fwd.conns)
        fwd.conns->prev = fc;
    fwd.conns = fc;
    if (uv_accept(server, (uv_stream_t *)&fc->client) < 0 ||
        uv_tcp_connect(&fc->connect, &fc->upstream, (const struct sockaddr *)&fwd.target,
                       fwd_on_upstream) < 0) {
        fwd_conn_close(fc);
        return;
    }
    uv_tcp_nodelay(&fc->client, 1);
    uv_tcp_nodelay(&fc->upstream, 1);
}

/* The client is read only once the broker side exists: nothing to buffer. */
static void fwd_on_upstream(uv_connect_t *req, int status)
{
    fwd_conn_t *fc = req->handle->data;
    if (status < 0 || fc->closing) {
        fwd_conn_close(fc);
        return;
    }
    uv_read_start((uv_stream_t *)&fc->client, fwd_alloc, fwd_on_read);
    uv_read_start((uv_stream_t *)&fc->upstream, fwd_alloc, fwd_on_read);
}

static void fwd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = malloc(FWD_BUF_SIZE);
    buf->len = buf->base ? FWD_BUF_SIZE : 0;
}

static void fwd_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    fwd_conn_t *fc = s->data;
    uv_stream_t *peer =
        s == (uv_stream_t *)&fc->client ? (uv_stream_t *)&fc->upstream : (uv_stream_t *)&fc->client;
    fwd_write_t *w;

    if (nread <= 0) {
        free(buf->base);
        if (nread < 0) /* EOF or error: Kafka has no use for half-closed links */
            fwd_conn_close(fc);
        return;
    }
    w = malloc(sizeof(*w));
    if (!w) {
        free(buf->base);
        fwd_conn_close(fc);
        return;
    }
    w->buf = uv_buf_init(buf->base, (unsigned)nread);
    w->conn = fc;
    if (uv_write(&w->req, peer, &w->buf, 1, fwd_on_write) < 0) {
        free(w->buf.base);
        free(w);
        fwd_conn_close(fc);
        return;
    }
    if (uv_stream_get_write_queue_size(peer) > FWD_HIGH_WATER)
        uv_read_stop(s);
}

static void fwd_on_write(uv_write_t *req, int status)
{
    fwd_write_t *w = (fwd_write_t *)req;
    fwd_conn_t *fc = w->conn;
    uv_stream_t *peer = req->handle;
    uv_stream_t *src = peer == (uv_stream_t *)&fc->client ? (uv_stream_t *)&fc->upstream
                                                          : (uv_stream_t *)&fc->client;
    free(w->buf.base);
    free(w);
    if (status < 0) {
        fwd_conn_close(fc);
        return;
    }
    if (!fc->closing && uv_stream_get_write_queue_size(peer) <= FWD_HIGH_WATER &&
        !uv_is_active((uv_handle_t *)src))
        uv_read_start(src, fwd_alloc, fwd_on_read);
}

static void fwd_conn_close(fwd_conn_t *fc)
{
    if (fc->closing)
        return;
    fc->closing = 1;
    uv_close((uv_handle_t *)&fc->client, fwd_on_close);
    uv_close((uv_handle_t *)&fc->upstream, fwd_on_close);
}

/* Pending writes are cancelled before this runs, so fc outlives them. */
static void fwd_on_close(uv_handle_t *h)
{
    fwd_conn_t *fc = h->data;
    if (--fc->handles > 0)
        return;
    if (fc->prev)
        fc->prev->next = fc->next;
    else
        fwd.conns = fc->next;
    if (fc->next)
        fc->next->prev = fc->prev;
    free(fc);
}

/* ---- Control channel ----------------------------------------------------
 * Commands run on the loop thread; the rd_kafka_mock_* calls hand them to the
 * mock cluster's thread and wait for it, so "ok" means applied. */

static int ctl_start(uv_loop_t *loop, const char *path, rd_kafka_mock_cluster_t *mc)
{
    int fd, rc;
    struct stat st;

    ctl.mc = mc;
    if (strcmp(path, "-") == 0) {
        if (uv_guess_handle(STDIN_FILENO) != UV_NAMED_PIPE &&
            uv_guess_handle(STDIN_FILENO) != UV_TTY) {
            fprintf(stderr, PROG ": --control -: stdin is not a pipe or terminal\n");
            return -1;
        }
        fd = STDIN_FILENO;
    } else {
        if (mkfifo(path, 0600) < 0 && errno != EEXIST) {
            fprintf(stderr, PROG ": --control %s: %s\n", path, strerror(errno));
            return -1;
        }
        if (stat(path, &st) < 0 || !S_ISFIFO(st.st_mode)) {
            fprintf(stderr, PROG ": --control %s: not a FIFO\n", path);
            return -1;
        }
        /* Read-write: our own write end keeps the FIFO from reading EOF
         * each time a writer closes it. */
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, PROG ": --control %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    uv_pipe_init(loop, &ctl.pipe, 0);
    ctl.on = 1;
    if ((rc = uv_pipe_open(&ctl.pipe, fd)) < 0 ||
        (rc = uv_read_start((uv_stream_t *)&ctl.pipe, ctl_alloc, ctl_on_read)) < 0) {
        fprintf(stderr, PROG ": --control %s: %s\n", path, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void ctl_stop(void)
{
    if (!ctl.on)
        return;
    ctl.on = 0;
    uv_close((uv_handle_t *)&ctl.pipe, NULL);
}

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char chunk[4096]; /* one read at a time on the loop thread */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void ctl_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    if (nread < 0) { /* stdin closed: the cluster runs on, uncontrolled */
        ctl_stop();
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        char ch = buf->base[i];
        if (ch != '\n') {
            if (ctl.used + 1 < sizeof(ctl.line))
                ctl.line[ctl.used++] = ch;
            else
                ctl.overlong = 1;
            continue;
        }
        ctl.line[ctl.used] = '\0';
        if (ctl.overlong) {
            printf("error %.40s...: line too long\n", ctl.line);
            fflush(stdout);
        } else {
            ctl_run(ctl.line);
        }
        ctl.used = 0;
        ctl.overlong = 0;
    }
}

/* "all" is -1, which the mock takes as every broker. */
static int parse_broker(const char *s, int32_t *id)
{
    int v;
    if (strcmp(s, "all") == 0) {
        *id = -1;
        return 0;
    }
    if (parse_int(s, -1, INT32_MAX, &v) < 0)
        return -1;
    *id = v;
    return 0;
}

/* Runs one command line and answers it on stdout. */
static void ctl_run(char *line)
{
    char echo[sizeof(ctl.line)], *argv[6], *save = NULL, *tok;
    const char *why = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    int argc = 0, n;
    int32_t id;

    for (tok = strtok_r(line, " \t\r", &save); tok && argc < 6;
         tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    if (argc == 0)
        return;
    /* The answer repeats the command with single spaces, as tests write it. */
    echo[0] = '\0';
    for (int i = 0; i < argc; i++)
        snprintf(echo + strlen(echo), sizeof(echo) - strlen(echo), "%s%s", i ? " " : "", argv[i]);

    if (argc == 1 && strcmp(argv[0], "ping") == 0) {
        /* nothing to do */
    } else if (argc == 3 && strcmp(argv[0], "broker") == 0 &&
               (strcmp(argv[1], "down") == 0 || strcmp(argv[1], "up") == 0)) {
        if (parse_broker(argv[2], &id) < 0)
            why = "expected a broker id or \"all\"";
        else if (argv[1][0] == 'd')
            err = rd_kafka_mock_broker_set_down(ctl.mc, id);
        else
            err = rd_kafka_mock_broker_set_up(ctl.mc, id);
    } else if (argc == 4 && strcmp(argv[0], "broker") == 0 && strcmp(argv[1], "rtt") == 0) {
        if (parse_broker(argv[2], &id) < 0)
            why = "expected a broker id or \"all\"";
        else if (parse_int(argv[3], 0, 3600000, &n) < 0)
            why = "expected a delay in milliseconds";
        else
            err = rd_kafka_mock_broker_set_rtt(ctl.mc, id, n);
    } else if (argc == 4 && strcmp(argv[0], "leader") == 0) {
        int part;
        if (!topic_name_ok(argv[1]))
            why = "bad topic name";
        else if (parse_int(argv[2], 0, 100000, &part) < 0)
            why = "expected a partition number";
        else if (parse_broker(argv[3], &id) < 0 || strcmp(argv[3], "all") == 0)
            why = "expected a broker id (-1: leaderless)";
        else
            err = rd_kafka_mock_partition_set_leader(ctl.mc, argv[1], part, id);
    } else {
        why = "unknown command (broker down|up ID, broker rtt ID MS, leader TOPIC PARTITION ID, "
              "ping)";
    }
    if (!why && err)
        why = rd_kafka_err2str(err);
    if (why)
        printf("error %s: %s\n", echo, why);
    else
        printf("ok %s\n", echo);
    fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    fwd_stop();
    ctl_stop();
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
}

typedef struct args {
    int brokers, port, partitions;
    const char *topics_path, *control;
} args_t;

/* Reads the command line into args. Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"port", required_argument, NULL, 'p'},
        {"topics", required_argument, NULL, 't'},
        {"partitions", required_argument, NULL, 'n'},
        {"control", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (parse_int(optarg, 1, 64, &a->brokers) < 0) {
                fprintf(stderr, PROG ": --brokers: expected 1..64, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'p':
            if (parse_int(optarg, 1, 65535, &a->port) < 0) {
                fprintf(stderr, PROG ": --port: expected 1..65535, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 't': a->topics_path = optarg; break;
        case 'n':
            if (parse_int(optarg, 1, 100000, &a->partitions) < 0) {
                fprintf(stderr, PROG ": --partitions: expected a positive count, got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'c': a->control = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            if (optopt)
                fprintf(stderr, PROG ": option %s needs a value (see --help)\n", argv[optind - 1]);
            else
                fprintf(stderr, PROG ": unknown option %s (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 2;
    }
    return -1;
}

/* The topics to create: --topics FILE, else Gantry's own. Returns 0, or an
 * exit code (reported). */
static int choose_topics(const args_t *a, topics_t *topics)
{
    static const struct {
        const char *name;
        int partitions;
    } defaults[] = {
        {"gantry.requests", 6},     {"gantry.tasks.small", 6}, {"gantry.tasks.large", 6},
        {"gantry.task-results", 6}, {"gantry.results", 6},     {"gantry.usage", 6},
        {"gantry.dlq", 1},          {"gantry.events", 3},      {"gantry.control", 3},
    };
    if (a->topics_path)
        return topics_load(topics, a->topics_path) < 0 ? 2 : 0;
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (topics_add(topics, defaults[i].name, a->partitions ? 0 : defaults[i].partitions)) {
            fprintf(stderr, PROG ": out of memory\n");
            return 1;
        }
    return 0;
}

/* The mock cluster, which hangs off a client instance that runs its threads,
 * with its topics. Returns 0, or -1 (reported; what was made is in *rk, *mc). */
static int start_cluster(const args_t *a, const topics_t *topics, rd_kafka_t **rk,
                         rd_kafka_mock_cluster_t **mc)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "client.id", PROG, NULL, 0);
    /* Quiet the notice about this client having no bootstrap.servers. */
    rd_kafka_conf_set(conf, "log_level", "4", NULL, 0);
    *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!*rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, PROG ": %s\n", why);
        return -1;
    }
    *mc = rd_kafka_mock_cluster_new(*rk, a->brokers);
    if (!*mc) {
        fprintf(stderr, PROG ": cannot create the mock cluster\n");
        return -1;
    }
    for (size_t i = 0; i < topics->n; i++) {
        int n = topics->v[i].partitions ? topics->v[i].partitions
                : a->partitions         ? a->partitions
                                        : 1;
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(*mc, topics->v[i].name, n, a->brokers < 3 ? a->brokers : 3);
        if (err) {
            fprintf(stderr, PROG ": create topic %s: %s\n", topics->v[i].name,
                    rd_kafka_err2str(err));
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    args_t args = {.brokers = 1};
    topics_t topics = {0};
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    uv_loop_t *loop = uv_default_loop();
    int rc = parse_args(argc, argv, &args);
    if (rc >= 0)
        return rc;
    if ((rc = choose_topics(&args, &topics)) != 0)
        goto out;
    rc = 1;

    signal(SIGPIPE, SIG_IGN);
    /* A test runner that dies must not leave a cluster behind. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    if (start_cluster(&args, &topics, &rk, &mc) < 0)
        goto out;
    if (args.port && fwd_start(loop, args.port, rd_kafka_mock_cluster_bootstraps(mc)) < 0)
        goto out;
    if (args.control && ctl_start(loop, args.control, mc) < 0)
        goto out;

    if (args.port)
        printf("bootstrap=127.0.0.1:%d\n", args.port);
    else
        printf("bootstrap=%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT);
    rc = 0;

out:
    /* Close whatever the loop still holds (error paths) so it can be closed. */
    fwd_stop();
    ctl_stop();
    if (sig_int.loop && !uv_is_closing((uv_handle_t *)&sig_int))
        on_signal(&sig_int, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    topics_free(&topics);
    return rc;
}
