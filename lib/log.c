/* log.c - structured logs: one JSON object per line on stderr.
 * Each line is formatted in a local buffer and written with one write(2), so
 * lines from librdkafka's threads never interleave with the loop's. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

static char log_process[64] = "gantry";
static atomic_int log_level = GT_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void gt_log_init(const char *process, gt_log_level_t level)
{
    snprintf(log_process, sizeof(log_process), "%s", process ? process : "gantry");
    atomic_store(&log_level, (int)level);
}

void gt_log_set_level(gt_log_level_t level)
{
    atomic_store(&log_level, (int)level);
}

int gt_log_parse_level(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    if (s && strcmp(s, "warning") == 0)
        return GT_LOG_WARN;
    return -1;
}

/* Appends s as JSON string contents (escaped) to buf at *pos, truncating safely. */
static void put_escaped(char *buf, size_t cap, size_t *pos, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && *pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*pos)++] = '\\';
            buf[(*pos)++] = (char)c;
        } else if (c == '\n') {
            buf[(*pos)++] = '\\';
            buf[(*pos)++] = 'n';
        } else if (c < 0x20) {
            memcpy(buf + *pos, "\\u00", 4);
            *pos += 4;
            buf[(*pos)++] = hex[c >> 4];
            buf[(*pos)++] = hex[c & 15];
        } else {
            buf[(*pos)++] = (char)c;
        }
    }
}

static void put_raw(char *buf, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + n + 4 >= cap)
        n = cap > *pos + 4 ? cap - *pos - 4 : 0;
    memcpy(buf + *pos, s, n);
    *pos += n;
}

static void put_field(char *buf, size_t cap, size_t *pos, const char *key, const char *val)
{
    if (!val)
        return;
    put_raw(buf, cap, pos, ",\"");
    put_raw(buf, cap, pos, key);
    put_raw(buf, cap, pos, "\":\"");
    put_escaped(buf, cap, pos, val);
    put_raw(buf, cap, pos, "\"");
}

void gt_log(gt_log_level_t level, const gt_log_ctx_t *ctx, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_level))
        return;
    char msg[2048], line[4096], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    size_t pos = 0;
    put_raw(line, sizeof(line), &pos, "{\"time\":\"");
    put_raw(line, sizeof(line), &pos, gt_clock_fmt(gt_clock_wall_ms(), ts, sizeof(ts)));
    put_raw(line, sizeof(line), &pos, "\"");
    put_field(line, sizeof(line), &pos, "level", level_names[level]);
    put_field(line, sizeof(line), &pos, "process", log_process);
    put_field(line, sizeof(line), &pos, "message", msg);
    if (ctx) {
        put_field(line, sizeof(line), &pos, "request_id", ctx->request_id);
        put_field(line, sizeof(line), &pos, "task_id", ctx->task_id);
        put_field(line, sizeof(line), &pos, "tenant_id", ctx->tenant_id);
        /* A trace id, or a traceparent's; anything else (a producer's malformed
         * header) is not written. */
        const char *tr = ctx->trace_id;
        size_t n = tr ? strlen(tr) : 0;
        if (n == 55 && tr[2] == '-' && tr[35] == '-')
            tr += 3;
        else if (n != 32)
            tr = NULL;
        if (tr && strspn(tr, "0123456789abcdef") >= 32) {
            char id[33];
            memcpy(id, tr, 32);
            id[32] = 0;
            put_field(line, sizeof(line), &pos, "trace_id", id);
        }
    }
    line[pos++] = '}';
    line[pos++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, pos);
    (void)w;
}
