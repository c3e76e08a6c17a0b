/* loadgen.c - gantry-loadgen: writes N inference requests as JSON lines, with
 * optional malformed ones, duplicates and one batch, for demos, tests and
 * benchmarks. Deterministic for a given --seed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: gantry-loadgen [--count N] [--bad N] [--dup N] [--batch N] [--tenants N]\n"
    "                      [--prefix P] [--seed S]\n"
    "  Writes --count requests (JSON lines) to stdout: --bad of them malformed (not JSON,\n"
    "  schema violations, unknown models), --dup of them exact re-sends of earlier ones,\n"
    "  and, if --batch N > 0, one batch request of N inputs. Good requests are the rest.\n"
    "  A summary line goes to stderr: good=G bad=B dup=D batch=N\n";

static const char *words[] = {"summarise", "translate", "explain", "classify", "rewrite",
                              "the",       "quarterly", "report",  "ticket",   "message",
                              "in",        "plain",     "French",  "terms",    "briefly"};

static unsigned long long rng;
static unsigned next(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(rng >> 33);
}

static void prompt(char *buf, size_t len)
{
    size_t pos = 0;
    int n = 4 + (int)(next() % 12);
    for (int i = 0; i < n && pos + 16 < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", i ? " " : "",
                                words[next() % (sizeof(words) / sizeof(words[0]))]);
}

typedef struct args {
    long count, bad, dup, batch, tenants, seed;
    const char *prefix;
} args_t;

/* Reads the command line into a. Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option opts[] = {{"count", required_argument, NULL, 'n'},
                                         {"bad", required_argument, NULL, 'b'},
                                         {"dup", required_argument, NULL, 'd'},
                                         {"batch", required_argument, NULL, 'B'},
                                         {"tenants", required_argument, NULL, 't'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "n:b:d:B:t:p:s:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'n': a->count = atol(optarg); break;
        case 'b': a->bad = atol(optarg); break;
        case 'd': a->dup = atol(optarg); break;
        case 'B': a->batch = atol(optarg); break;
        case 't': a->tenants = atol(optarg); break;
        case 'p': a->prefix = optarg; break;
        case 's': a->seed = atol(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    long good = a->count - a->bad - a->dup - (a->batch > 0);
    if (a->count < 1 || a->bad < 0 || a->dup < 0 || a->batch < 0 || a->tenants < 1 || good < 1 ||
        (a->dup > 0 && good < 1)) {
        fprintf(stderr, "gantry-loadgen: counts do not add up (need count > bad + dup + batch)\n");
        return 2;
    }
    return -1;
}

/* Writes good request i into line (a chat every tenth, a routing hint on two
 * in three) and prints it. */
static void put_good(const args_t *a, long i, char *line, size_t len)
{
    char text[512];
    prompt(text, sizeof(text));
    const char *kind = (i % 10 == 9) ? "chat" : "generate";
    const char *hint = (i % 3 == 0) ? "simple" : (i % 3 == 1) ? "complex" : NULL;
    size_t pos = (size_t)snprintf(
        line, len,
        "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-%ld\",\"tenant_id\":"
        "\"tenant-%ld\",\"kind\":\"%s\",\"model\":\"auto\",",
        a->prefix, i, i % a->tenants, kind);
    if (strcmp(kind, "chat") == 0)
        pos += (size_t)snprintf(
            line + pos, len - pos,
            "\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]},", text);
    else
        pos += (size_t)snprintf(line + pos, len - pos, "\"input\":\"%s\",", text);
    if (hint)
        pos += (size_t)snprintf(line + pos, len - pos, "\"routing\":{\"hint\":\"%s\"},", hint);
    snprintf(line + pos, len - pos, "\"parameters\":{\"max_tokens\":%u,\"temperature\":0.2}}\n",
             16 + next() % 48);
    fputs(line, stdout);
}

/* Prints bad request n: not JSON, an unknown kind, an unknown model, or no tenant. */
static void put_bad(const args_t *a, long n)
{
    switch (n % 4) {
    case 0: printf("this is not json %ld\n", n); break;
    case 1:
        printf("{\"request_id\":\"%s-bad-%ld\",\"tenant_id\":\"t\",\"kind\":\"paint\","
               "\"model\":\"auto\",\"input\":\"x\"}\n",
               a->prefix, n);
        break;
    case 2:
        printf("{\"request_id\":\"%s-bad-%ld\",\"tenant_id\":\"t\",\"kind\":\"generate\","
               "\"model\":\"no-such-model\",\"input\":\"x\"}\n",
               a->prefix, n);
        break;
    default:
        printf("{\"request_id\":\"%s-bad-%ld\",\"kind\":\"generate\",\"model\":\"auto\"}\n",
               a->prefix, n);
    }
}

/* Prints one batch request of a->batch inputs. */
static void put_batch(const args_t *a)
{
    char text[512];
    printf("{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-batch\",\"tenant_id\":"
           "\"tenant-0\",\"kind\":\"generate\",\"model\":\"auto\",\"batch\":[",
           a->prefix);
    for (long i = 0; i < a->batch; i++) {
        prompt(text, sizeof(text));
        printf("%s\"%ld: %s\"", i ? "," : "", i, text);
    }
    printf("]}\n");
}

int main(int argc, char **argv)
{
    args_t a = {.count = 1000, .tenants = 5, .seed = 1, .prefix = "req"};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    rng = (unsigned long long)a.seed;
    long good = a.count - a.bad - a.dup - (a.batch > 0), made = 0;
    char line[1024];
    /* Interleave: good requests, with bad and duplicate ones spread among them. */
    long bad_every = a.bad ? (good / a.bad > 0 ? good / a.bad : 1) : 0;
    long dup_every = a.dup ? (good / a.dup > 0 ? good / a.dup : 1) : 0;
    long bad_left = a.bad, dup_left = a.dup;
    for (long i = 0; i < good; i++) {
        put_good(&a, i, line, sizeof(line));
        made++;
        if (bad_left && (i + 1) % bad_every == 0)
            put_bad(&a, bad_left--);
        if (dup_left && (i + 1) % dup_every == 0) {
            fputs(line, stdout); /* an exact re-send of the request just written */
            dup_left--;
        }
    }
    for (; bad_left > 0; bad_left--)
        printf("not json either %ld\n", bad_left);
    if (a.batch > 0)
        put_batch(&a);
    fflush(stdout);
    fprintf(stderr, "good=%ld bad=%ld dup=%ld batch=%ld\n", made, a.bad, a.dup - dup_left, a.batch);
    return 0;
}
