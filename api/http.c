/* http.c - gantry-api's HTTP side: the OpenAI files and batches and the
 * Anthropic message batches endpoints on libmicrohttpd, one thread per
 * connection, each request on a pooled blocking PostgreSQL connection (never
 * the loop's). Uploads and downloads stream in chunks; nothing holds a file. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "json_text.h"
#include "log.h"
#include "pg.h"
#include "metrics.h"

#define CHUNK_BYTES (1 << 20) /* upload chunk stored per row */
#define LINE_ROWS 500         /* batch lines inserted per statement */

struct gt_api_http {
    struct MHD_Daemon *d;
    int port;
    const gt_api_config_t *ac;
    char *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    PGconn **free_conns;
    int n_free, n_open;
};

static gt_metric_t *m_requests;

/* ---- PostgreSQL pool ----------------------------------------------------- */

static PGconn *pool_get(gt_api_http_t *h)
{
    PGconn *c = NULL;
    pthread_mutex_lock(&h->mu);
    while (!h->n_free && h->n_open >= h->ac->pg_connections)
        pthread_cond_wait(&h->cv, &h->mu);
    if (h->n_free)
        c = h->free_conns[--h->n_free];
    else
        h->n_open++;
    pthread_mutex_unlock(&h->mu);
    if (c && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    }
    if (!c) {
        char err[256];
        c = gt_pg_connect_sync(h->conninfo, err, sizeof(err));
        if (!c) {
            gt_log(GT_LOG_WARN, NULL, "api: postgres: %s", err);
            pthread_mutex_lock(&h->mu);
            h->n_open--;
            pthread_cond_signal(&h->cv);
            pthread_mutex_unlock(&h->mu);
        }
    }
    return c;
}

static void pool_put(gt_api_http_t *h, PGconn *c)
{
    if (!c)
        return;
    if (PQtransactionStatus(c) != PQTRANS_IDLE) /* a request left a transaction open: drop it */
        PQexec(c, "ROLLBACK");
    pthread_mutex_lock(&h->mu);
    if (PQstatus(c) == CONNECTION_OK) {
        h->free_conns[h->n_free++] = c;
    } else {
        PQfinish(c);
        h->n_open--;
    }
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Runs sql; returns the result when it has the expected status, else NULL
 * (logged). */
static PGresult *q(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    gt_log(GT_LOG_WARN, NULL, "api: sql: %s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    return NULL;
}

static int exec_ok(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = q(c, sql, n, params);
    PQclear(r);
    return r ? 0 : -1;
}

/* ---- replies ------------------------------------------------------------- */

enum flavor { OPENAI, ANTHROPIC };

static enum MHD_Result reply_buf(struct MHD_Connection *conn, unsigned status, const char *type,
                                 char *body, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    gt_metric_add(m_requests, 1, status >= 500 ? "5xx" : status >= 400 ? "4xx" : "2xx");
    return r;
}

/* Steals o. */
static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return MHD_NO;
    return reply_buf(conn, status, "application/json", s, strlen(s));
}

/* The vendor's error shape. */
static enum MHD_Result reply_err(struct MHD_Connection *conn, enum flavor f, unsigned status,
                                 const char *msg)
{
    const char *type = status == 401   ? "authentication_error"
                       : status == 404 ? "not_found_error"
                       : status >= 500 ? "api_error"
                                       : "invalid_request_error";
    if (f == ANTHROPIC)
        return reply_json(
            conn, status,
            json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", type, "message", msg));
    if (status == 404)
        type = "invalid_request_error";
    return reply_json(
        conn, status,
        json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", msg, "type", type, "param", "code"));
}

/* A result's single jsonb column, parsed (NULL when none). */
static json_t *row_json(PGresult *r, int row, int col)
{
    if (!r || PQntuples(r) <= row || PQgetisnull(r, row, col))
        return NULL;
    return json_loads(PQgetvalue(r, row, col), 0, NULL);
}

static void new_id(const char *prefix, char *out, size_t len)
{
    unsigned char b[12];
    if (RAND_bytes(b, sizeof(b)) != 1)
        abort(); /* no randomness: ids would collide */
    int n = snprintf(out, len, "%s", prefix);
    for (size_t i = 0; i < sizeof(b) && (size_t)n + 2 < len; i++)
        n += snprintf(out + n, len - (size_t)n, "%02x", b[i]);
}

/* ---- connection state ---------------------------------------------------- */

typedef struct upload {
    PGconn *c;
    char file_id[48];
    char *filename;
    char purpose[32];
    char *buf;
    size_t used;
    int seq;
    int64_t bytes, lines;
    int last_nl;       /* the last byte seen was a newline */
    int started;       /* the file row exists (transaction open) */
    const char *error; /* why the upload is refused; set once */
    unsigned status;
} upload_t;

typedef struct req {
    enum flavor flavor;
    char tenant[128];
    int authed;
    unsigned auth_status; /* 0: authenticated */
    char *body;           /* JSON bodies, bounded */
    size_t body_len;
    int too_large;
    struct MHD_PostProcessor *pp;
    char tail[256]; /* the upload's last raw bytes */
    size_t tail_len;
    char closing[128]; /* "--BOUNDARY--" */
    upload_t up;
} req_t;

static void req_free(req_t *r, gt_api_http_t *h)
{
    if (!r)
        return;
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    if (r->up.c)
        pool_put(h, r->up.c); /* rolls back an upload cut short */
    free(r->up.filename);
    free(r->up.buf);
    free(r->body);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req_free(*con_cls, cls);
    *con_cls = NULL;
}

/* Bearer (OpenAI) or x-api-key (Anthropic): the tenant of an unrevoked key. */
static unsigned authenticate(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r)
{
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-api-key");
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!key && auth && strncasecmp(auth, "Bearer ", 7) == 0)
        key = auth + 7;
    if (!key || !*key)
        return 401;
    char hex[65];
    gt_api_key_hash(key, hex);
    PGconn *c = pool_get(h);
    if (!c)
        return 503;
    const char *p[1] = {hex};
    PGresult *res =
        q(c, "SELECT tenant_id FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL", 1, p);
    unsigned st = !res ? 503 : PQntuples(res) == 1 ? 0 : 401;
    if (!st)
        snprintf(r->tenant, sizeof(r->tenant), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    pool_put(h, c);
    return st;
}

/* ---- files --------------------------------------------------------------- */

static int upload_flush(gt_api_http_t *h, upload_t *u)
{
    if (!u->started) {
        u->c = pool_get(h);
        if (!u->c || exec_ok(u->c, "BEGIN", 0, NULL))
            return -1;
        u->started = 1;
    }
    if (!u->used)
        return 0;
    char seq[16];
    snprintf(seq, sizeof(seq), "%d", u->seq++);
    const char *vals[3] = {u->file_id, seq, u->buf};
    int lens[3] = {0, 0, (int)u->used};
    int fmts[3] = {0, 0, 1};
    PGresult *r = PQexecParams(u->c,
                               "INSERT INTO api_file_chunks (file_id, seq, data)"
                               " VALUES ($1, $2, $3)",
                               3, NULL, vals, lens, fmts, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        gt_log(GT_LOG_WARN, NULL, "api: sql: %s", PQresultErrorMessage(r));
    PQclear(r);
    u->used = 0;
    return ok ? 0 : -1;
}

static enum MHD_Result on_post_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    req_t *r = cls;
    upload_t *u = &r->up;
    if (strcmp(key, "purpose") != 0)
        return MHD_YES; /* other fields are ignored, as the vendor does */
    size_t have = strlen(u->purpose);
    if (have + size >= sizeof(u->purpose)) {
        u->error = "purpose: must be batch";
        u->status = 400;
        return MHD_NO;
    }
    memcpy(u->purpose + have, data, size);
    u->purpose[have + size] = 0;
    return MHD_YES;
}

static enum MHD_Result on_file_bytes(gt_api_http_t *h, req_t *r, const char *data, size_t size)
{
    upload_t *u = &r->up;
    while (size) {
        size_t n = CHUNK_BYTES - u->used;
        if (n > size)
            n = size;
        memcpy(u->buf + u->used, data, n);
        for (size_t i = 0; i < n; i++)
            if (data[i] == '\n')
                u->lines++;
        if (n)
            u->last_nl = data[n - 1] == '\n';
        u->used += n;
        u->bytes += (int64_t)n;
        data += n;
        size -= n;
        if (u->bytes > h->ac->max_file_bytes) {
            u->error = "file: larger than the limit (api.max_file_bytes)";
            u->status = 413;
            return MHD_NO;
        }
        if (u->lines > h->ac->max_file_lines) {
            u->error = "file: more lines than the limit (api.max_file_lines)";
            u->status = 400;
            return MHD_NO;
        }
        if (u->used == CHUNK_BYTES && upload_flush(h, u)) {
            u->error = "storage unavailable";
            u->status = 503;
            return MHD_NO;
        }
    }
    return MHD_YES;
}

static __thread gt_api_http_t *tls_h; /* the server, for the multipart iterator */

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    req_t *r = cls;
    if (r->up.error)
        return MHD_NO;
    if (strcmp(key, "file") == 0) {
        if (!r->up.filename)
            r->up.filename = strdup(filename ? filename : "upload.jsonl");
        return on_file_bytes(tls_h, r, data, size);
    }
    return on_post_field(cls, kind, key, filename, content_type, transfer_encoding, data, off,
                         size);
}

static json_t *file_object(PGresult *res, int row)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:n}", "id", PQgetvalue(res, row, 0), "object",
                     "file", "bytes", (json_int_t)strtoll(PQgetvalue(res, row, 1), NULL, 10),
                     "created_at", (json_int_t)strtoll(PQgetvalue(res, row, 2), NULL, 10),
                     "filename", PQgetvalue(res, row, 3), "purpose", PQgetvalue(res, row, 4),
                     "status", "processed", "status_details");
}

static const char file_sql[] =
    "SELECT file_id, bytes, gantry_api_epoch(created_at), filename, purpose FROM api_files"
    " WHERE file_id = $1 AND tenant_id = $2 AND complete AND deleted_at IS NULL";

static enum MHD_Result upload_end(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r)
{
    upload_t *u = &r->up;
    if (u->error)
        return reply_err(conn, OPENAI, u->status, u->error);
    if (!r->closing[0] || !memmem(r->tail, r->tail_len, r->closing, strlen(r->closing)))
        return reply_err(conn, OPENAI, 400, "file: malformed or truncated multipart body");
    if (strcmp(u->purpose, "batch") != 0)
        return reply_err(conn, OPENAI, 400, "purpose: must be batch");
    if (!u->filename)
        return reply_err(conn, OPENAI, 400, "file: required (multipart field 'file')");
    if (upload_flush(h, u))
        return reply_err(conn, OPENAI, 503, "storage unavailable");
    if (u->bytes && !u->last_nl)
        u->lines++;
    char bytes[24], lines[24];
    snprintf(bytes, sizeof(bytes), "%lld", (long long)u->bytes);
    snprintf(lines, sizeof(lines), "%lld", (long long)u->lines);
    const char *p[6] = {u->file_id, r->tenant, u->filename, u->purpose, bytes, lines};
    if (exec_ok(u->c,
                "INSERT INTO api_files (file_id, tenant_id, filename, purpose, bytes, lines,"
                " complete) VALUES ($1, $2, $3, $4, $5, $6, true)",
                6, p) ||
        exec_ok(u->c, "SET CONSTRAINTS ALL IMMEDIATE", 0, NULL) || exec_ok(u->c, "COMMIT", 0, NULL))
        return reply_err(conn, OPENAI, 503, "storage unavailable");
    const char *p2[2] = {u->file_id, r->tenant};
    PGresult *res = q(u->c, file_sql, 2, p2);
    json_t *o = res && PQntuples(res) ? file_object(res, 0) : NULL;
    PQclear(res);
    return o ? reply_json(conn, 200, o) : reply_err(conn, OPENAI, 503, "storage unavailable");
}

typedef struct reader {
    gt_api_http_t *h;
    char file_id[64];
    int seq;
    PGresult *cur;
    size_t pos;
} reader_t;

/* Streams the file chunk after chunk, one row in memory. */
static ssize_t content_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    reader_t *rd = cls;
    while (!rd->cur || rd->pos >= (size_t)PQgetlength(rd->cur, 0, 0)) {
        PQclear(rd->cur);
        rd->cur = NULL;
        rd->pos = 0;
        char seq[16];
        snprintf(seq, sizeof(seq), "%d", rd->seq++);
        const char *p[2] = {rd->file_id, seq};
        PGconn *c = pool_get(rd->h);
        if (!c)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        PGresult *r = PQexecParams(c,
                                   "SELECT data FROM api_file_chunks WHERE file_id = $1 AND"
                                   " seq >= $2 ORDER BY seq LIMIT 1",
                                   2, NULL, p, NULL, NULL, 1);
        pool_put(rd->h, c);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!PQntuples(r)) {
            PQclear(r);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        rd->cur = r;
    }
    size_t n = (size_t)PQgetlength(rd->cur, 0, 0) - rd->pos;
    if (n > max)
        n = max;
    memcpy(buf, PQgetvalue(rd->cur, 0, 0) + rd->pos, n);
    rd->pos += n;
    return (ssize_t)n;
}

static void content_free(void *cls)
{
    reader_t *rd = cls;
    PQclear(rd->cur);
    free(rd);
}

static enum MHD_Result file_get(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r,
                                const char *id, int content, int del)
{
    PGconn *c = pool_get(h);
    if (!c)
        return reply_err(conn, OPENAI, 503, "storage unavailable");
    const char *p[2] = {id, r->tenant};
    PGresult *res = q(c, file_sql, 2, p);
    enum MHD_Result ret;
    if (!res) {
        ret = reply_err(conn, OPENAI, 503, "storage unavailable");
        goto out;
    }
    if (PQntuples(res) != 1) {
        ret = reply_err(conn, OPENAI, 404, "No such File object");
        goto out;
    }
    if (del) {
        if (exec_ok(c,
                    "UPDATE api_files SET deleted_at = now() WHERE file_id = $1 AND tenant_id = $2",
                    2, p)) {
            ret = reply_err(conn, OPENAI, 503, "storage unavailable");
            goto out;
        }
        exec_ok(c, "DELETE FROM api_file_chunks WHERE file_id = $1", 1, p);
        ret = reply_json(conn, 200,
                         json_pack("{s:s,s:s,s:b}", "id", id, "object", "file", "deleted", 1));
        goto out;
    }
    if (!content) {
        ret = reply_json(conn, 200, file_object(res, 0));
        goto out;
    }
    reader_t *rd = calloc(1, sizeof(*rd));
    if (!rd) {
        ret = MHD_NO;
        goto out;
    }
    rd->h = h;
    snprintf(rd->file_id, sizeof(rd->file_id), "%s", id);
    struct MHD_Response *resp =
        MHD_create_response_from_callback((uint64_t)strtoll(PQgetvalue(res, 0, 1), NULL, 10),
                                          64 * 1024, content_read, rd, content_free);
    if (!resp) {
        free(rd);
        ret = MHD_NO;
        goto out;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/jsonl");
    ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    gt_metric_add(m_requests, 1, "2xx");
out:
    PQclear(res);
    pool_put(h, c);
    return ret;
}

/* ---- batch lines --------------------------------------------------------- */

/* custom_ids already seen in one create (bounded by api.max_file_lines). */
typedef struct idset {
    char **slots;
    size_t cap, n;
} idset_t;

static uint64_t fnv(const char *s)
{
    uint64_t x = 1469598103934665603ULL;
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 1099511628211ULL;
    return x;
}

/* 1: already there, 0: added, -1: out of memory. */
static int idset_add(idset_t *s, const char *id)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        char **slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i]) {
                size_t j = fnv(s->slots[i]) & (cap - 1);
                while (slots[j])
                    j = (j + 1) & (cap - 1);
                slots[j] = s->slots[i];
            }
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    size_t j = fnv(id) & (s->cap - 1);
    for (; s->slots[j]; j = (j + 1) & (s->cap - 1))
        if (strcmp(s->slots[j], id) == 0)
            return 1;
    if (!(s->slots[j] = strdup(id)))
        return -1;
    s->n++;
    return 0;
}

static void idset_free(idset_t *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i]);
    free(s->slots);
}

/* Builds the batch's lines and inserts them LINE_ROWS at a time. */
typedef struct lines {
    PGconn *c;
    const char *batch_id, *tenant;
    json_t *rows;
    int n; /* lines so far */
    idset_t seen;
    json_t *errors; /* batch-failing problems: [{code, message, param, line}] */
} lines_t;

static int lines_flush(lines_t *ls)
{
    if (!json_array_size(ls->rows))
        return 0;
    char *s = json_dumps(ls->rows, JSON_COMPACT);
    if (!s)
        return -1;
    const char *p[2] = {ls->batch_id, s};
    int rc = exec_ok(ls->c,
                     "INSERT INTO api_batch_lines (batch_id, line, custom_id, request_id, request,"
                     " state, result)"
                     " SELECT $1, line, custom_id, request_id, request, state, result"
                     " FROM jsonb_to_recordset($2::jsonb) AS x(line int, custom_id text,"
                     " request_id text, request jsonb, state text, result jsonb)",
                     2, p);
    free(s);
    json_array_clear(ls->rows);
    return rc;
}

static int custom_id_ok(const char *id, size_t len)
{
    if (!id || !len || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("._:@-", id[i]))
            return 0;
    return 1;
}

static void batch_error(lines_t *ls, const char *code, const char *msg, int line)
{
    if (json_array_size(ls->errors) < 1000)
        json_array_append_new(ls->errors, json_pack("{s:s,s:s,s:n,s:i}", "code", code, "message",
                                                    msg, "param", "line", line));
}

/* One line: a request row, or an errored row with the reason. A custom_id
 * seen before fails the whole batch (results are matched by it). */
static int add_line(lines_t *ls, const gt_api_http_t *h, const char *custom_id, const char *why,
                    json_t *request)
{
    int line = ++ls->n;
    json_t *row = json_pack("{s:i,s:s}", "line", line, "custom_id", custom_id ? custom_id : "");
    if (!row)
        goto oom;
    if (custom_id && *custom_id) {
        int dup = idset_add(&ls->seen, custom_id);
        if (dup < 0)
            goto oom;
        if (dup) {
            char msg[160];
            snprintf(msg, sizeof(msg), "custom_id %.64s is used by an earlier line", custom_id);
            batch_error(ls, "duplicate_custom_id", msg, line);
            json_decref(row);
            json_decref(request);
            return 0;
        }
    }
    if (request) {
        char rid[200];
        snprintf(rid, sizeof(rid), "%s:%s", ls->batch_id, custom_id);
        json_object_set_new(request, "request_id", json_string(rid));
        json_object_set_new(request, "tenant_id", json_string(ls->tenant));
        json_object_set_new(
            request, "metadata",
            json_pack("{s:s,s:s}", "batch_id", ls->batch_id, "custom_id", custom_id));
        json_object_set_new(row, "request_id", json_string(rid));
        json_object_set_new(row, "request", request);
        json_object_set_new(row, "state", json_string("pending"));
    } else {
        json_object_set_new(row, "state", json_string("errored"));
        json_object_set_new(row, "result",
                            json_pack("{s:s,s:s}", "code", "invalid_request", "message", why));
    }
    json_array_append_new(ls->rows, row);
    (void)h;
    return json_array_size(ls->rows) >= LINE_ROWS ? lines_flush(ls) : 0;
oom:
    json_decref(request);
    return -1;
}

/* One OpenAI input line (NUL-terminated, without its newline). */
static int openai_line(lines_t *ls, const gt_api_http_t *h, const char *endpoint, char *text)
{
    char why[256] = "";
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    const char *cid = NULL;
    json_t *req = NULL;
    int rc;
    if (!json_is_object(o)) {
        snprintf(why, sizeof(why), "line is not a JSON object");
        goto done;
    }
    json_t *jc = json_object_get(o, "custom_id");
    cid = json_string_value(jc);
    if (!custom_id_ok(cid, cid ? json_string_length(jc) : 0)) {
        snprintf(why, sizeof(why),
                 "custom_id: required, at most 64 characters of"
                 " A-Z a-z 0-9 . _ : @ -");
        cid = NULL;
        goto done;
    }
    const char *method = json_string_value(json_object_get(o, "method"));
    const char *url = json_string_value(json_object_get(o, "url"));
    if (!method || strcmp(method, "POST") != 0) {
        snprintf(why, sizeof(why), "method: must be POST");
        goto done;
    }
    if (!url || strcmp(url, endpoint) != 0) {
        snprintf(why, sizeof(why), "url: must be the batch's endpoint %s", endpoint);
        goto done;
    }
    req = gt_api_openai_body(h->ac, endpoint, json_object_get(o, "body"), why, sizeof(why));
done:
    rc = add_line(ls, h, cid, why, req);
    json_decref(o);
    return rc;
}

/* Splits the stored file into lines, chunk by chunk (one chunk and one line
 * in memory). Blank lines are skipped. */
static int openai_lines(lines_t *ls, const gt_api_http_t *h, const char *file_id,
                        const char *endpoint)
{
    char *carry = NULL;
    size_t carry_len = 0;
    int rc = -1;
    for (int seq = 0;; seq++) {
        char s[16];
        snprintf(s, sizeof(s), "%d", seq);
        const char *p[2] = {file_id, s};
        PGresult *r = PQexecParams(ls->c,
                                   "SELECT data FROM api_file_chunks WHERE file_id = $1"
                                   " AND seq = $2",
                                   2, NULL, p, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            goto out;
        }
        int last = PQntuples(r) == 0;
        const char *d = last ? "\n" : PQgetvalue(r, 0, 0);
        size_t len = last ? 1 : (size_t)PQgetlength(r, 0, 0);
        size_t start = 0;
        for (size_t i = 0; i < len; i++) {
            if (d[i] != '\n')
                continue;
            size_t n = i - start;
            char *line = malloc(carry_len + n + 1);
            if (!line) {
                PQclear(r);
                goto out;
            }
            if (carry_len)
                memcpy(line, carry, carry_len);
            memcpy(line + carry_len, d + start, n);
            size_t total = carry_len + n;
            line[total] = 0;
            if (total && line[total - 1] == '\r')
                line[--total] = 0;
            carry_len = 0;
            start = i + 1;
            int blank = 1;
            for (size_t k = 0; k < total && blank; k++)
                blank = isspace((unsigned char)line[k]) != 0;
            int lrc = blank ? 0 : openai_line(ls, h, endpoint, line);
            free(line);
            if (lrc) {
                PQclear(r);
                goto out;
            }
        }
        if (start < len) {
            char *nc = realloc(carry, carry_len + len - start);
            if (!nc) {
                PQclear(r);
                goto out;
            }
            carry = nc;
            memcpy(carry + carry_len, d + start, len - start);
            carry_len += len - start;
        }
        PQclear(r);
        if (last)
            break;
    }
    rc = lines_flush(ls);
out:
    free(carry);
    return rc;
}

/* "24h" (the vendor's only value), or "<n>s|m|h" within api's window bounds. */
static int64_t parse_window(const gt_api_config_t *ac, const char *w)
{
    if (!w)
        return -1;
    char *end;
    long long v = strtoll(w, &end, 10);
    int64_t mul = !strcmp(end, "h") ? 3600 : !strcmp(end, "m") ? 60 : !strcmp(end, "s") ? 1 : 0;
    if (end == w || v <= 0 || !mul)
        return -1;
    int64_t s = v * mul;
    return s >= ac->min_window_s && s <= ac->max_window_s ? s : -1;
}

static const char batch_get_sql[] = "SELECT gantry_api_openai_batch(b) FROM api_batches b"
                                    " WHERE batch_id = $1 AND tenant_id = $2 AND flavor = 'openai'";

static enum MHD_Result batch_reply(PGconn *c, struct MHD_Connection *conn, const char *id,
                                   const char *tenant)
{
    const char *p[2] = {id, tenant};
    PGresult *res = q(c, batch_get_sql, 2, p);
    json_t *o = row_json(res, 0, 0);
    int found = res && PQntuples(res) == 1;
    PQclear(res);
    if (!res)
        return reply_err(conn, OPENAI, 503, "storage unavailable");
    if (!found || !o)
        return reply_err(conn, OPENAI, 404, "No such Batch object");
    return reply_json(conn, 200, o);
}

/* Creates, validates (line by line) and starts an OpenAI batch in one
 * transaction: the pump publishes its lines once it is in_progress. */
static enum MHD_Result batch_create(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r)
{
    json_t *body = r->body ? gt_json_parse(r->body, r->body_len, 0, NULL) : NULL;
    const char *file = json_string_value(json_object_get(body, "input_file_id"));
    const char *endpoint = json_string_value(json_object_get(body, "endpoint"));
    const char *window = json_string_value(json_object_get(body, "completion_window"));
    json_t *meta = json_object_get(body, "metadata");
    PGconn *c = NULL;
    lines_t ls = {0};
    enum MHD_Result ret;
    char batch_id[48], secs[24];
    int64_t w;
    if (!json_is_object(body)) {
        ret = reply_err(conn, OPENAI, 400, "body: must be a JSON object");
        goto out;
    }
    if (!file) {
        ret = reply_err(conn, OPENAI, 400, "input_file_id: required");
        goto out;
    }
    if (!endpoint ||
        (strcmp(endpoint, "/v1/chat/completions") != 0 &&
         strcmp(endpoint, "/v1/completions") != 0 && strcmp(endpoint, "/v1/embeddings") != 0)) {
        ret = reply_err(conn, OPENAI, 400,
                        "endpoint: must be /v1/chat/completions,"
                        " /v1/completions or /v1/embeddings");
        goto out;
    }
    if ((w = parse_window(h->ac, window)) < 0) {
        ret = reply_err(conn, OPENAI, 400, "completion_window: must be 24h");
        goto out;
    }
    if (meta && !json_is_object(meta) && !json_is_null(meta)) {
        ret = reply_err(conn, OPENAI, 400, "metadata: must be an object");
        goto out;
    }
    if (!(c = pool_get(h))) {
        ret = reply_err(conn, OPENAI, 503, "storage unavailable");
        goto out;
    }
    const char *pf[2] = {file, r->tenant};
    PGresult *fr = q(c,
                     "SELECT purpose FROM api_files WHERE file_id = $1 AND tenant_id = $2 AND"
                     " complete AND deleted_at IS NULL",
                     2, pf);
    int found = fr && PQntuples(fr) == 1;
    int purpose_ok = found && strcmp(PQgetvalue(fr, 0, 0), "batch") == 0;
    PQclear(fr);
    if (!fr) {
        ret = reply_err(conn, OPENAI, 503, "storage unavailable");
        goto out;
    }
    if (!found) {
        ret = reply_err(conn, OPENAI, 404, "No such File object");
        goto out;
    }
    if (!purpose_ok) {
        ret = reply_err(conn, OPENAI, 400, "input_file_id: the file's purpose must be batch");
        goto out;
    }
    new_id("batch_", batch_id, sizeof(batch_id));
    snprintf(secs, sizeof(secs), "%lld", (long long)w);
    char *metas = meta && json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    const char *pb[7] = {batch_id, r->tenant, endpoint, file, window, metas, secs};
    int bad = exec_ok(c, "BEGIN", 0, NULL) ||
              exec_ok(c,
                      "INSERT INTO api_batches (batch_id, tenant_id, flavor, endpoint,"
                      " input_file_id, completion_window, metadata, status, expires_at)"
                      " VALUES ($1, $2, 'openai', $3, $4, $5, $6::jsonb, 'validating',"
                      " now() + make_interval(secs => $7::bigint))",
                      7, pb);
    free(metas);
    if (bad) {
        ret = reply_err(conn, OPENAI, 503, "storage unavailable");
        goto out;
    }
    ls.c = c;
    ls.batch_id = batch_id;
    ls.tenant = r->tenant;
    ls.rows = json_array();
    ls.errors = json_array();
    if (!ls.rows || !ls.errors || openai_lines(&ls, h, file, endpoint)) {
        ret = reply_err(conn, OPENAI, 503, "storage unavailable");
        goto out;
    }
    if (!ls.n)
        batch_error(&ls, "empty_file", "the input file has no lines", 0);
    if (ls.n > h->ac->max_file_lines)
        batch_error(&ls, "too_many_lines", "more lines than the limit (api.max_file_lines)", 0);
    char n[16];
    snprintf(n, sizeof(n), "%d", ls.n);
    if (json_array_size(ls.errors)) {
        json_t *e = json_pack("{s:s,s:O}", "object", "list", "data", ls.errors);
        char *es = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        const char *pe[2] = {batch_id, es};
        bad = exec_ok(c, "DELETE FROM api_batch_lines WHERE batch_id = $1", 1, pe) ||
              exec_ok(c,
                      "UPDATE api_batches SET status = 'failed', failed_at = now(),"
                      " errors = $2::jsonb, event_sent = true WHERE batch_id = $1",
                      2, pe);
        free(es);
    } else {
        const char *pn[2] = {batch_id, n};
        bad = exec_ok(c,
                      "UPDATE api_batches SET status = 'in_progress', in_progress_at = now(),"
                      " total = $2 WHERE batch_id = $1",
                      2, pn);
    }
    if (bad || exec_ok(c, "COMMIT", 0, NULL)) {
        ret = reply_err(conn, OPENAI, 503, "storage unavailable");
        goto out;
    }
    gt_log(GT_LOG_INFO, NULL, "api: batch %s of tenant %s: %d lines, %zu batch errors", batch_id,
           r->tenant, ls.n, json_array_size(ls.errors));
    ret = batch_reply(c, conn, batch_id, r->tenant);
out:
    json_decref(ls.rows);
    json_decref(ls.errors);
    idset_free(&ls.seen);
    json_decref(body);
    pool_put(h, c);
    return ret;
}

/* The next page after the cursor (newest first), and whether more follow. */
static enum MHD_Result batch_list(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r,
                                  const char *flavor)
{
    int anth = r->flavor == ANTHROPIC;
    const char *after =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, anth ? "after_id" : "after");
    const char *ls = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
    long limit = ls ? strtol(ls, NULL, 10) : 20;
    if (limit < 1 || limit > (anth ? 1000 : 100))
        return reply_err(conn, r->flavor, 400, "limit: out of range");
    char lim[24];
    snprintf(lim, sizeof(lim), "%ld", limit + 1);
    char base[300];
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    snprintf(base, sizeof(base), "http://%s", host ? host : "localhost");
    const char *p[5] = {r->tenant, flavor, after, lim, base};
    PGconn *c = pool_get(h);
    if (!c)
        return reply_err(conn, r->flavor, 503, "storage unavailable");
    PGresult *res = q(c,
                      anth ? "SELECT gantry_api_anthropic_batch(b, $5) FROM api_batches b"
                             " WHERE tenant_id = $1 AND flavor = $2 AND ($3::text IS NULL OR"
                             " (created_at, batch_id) < (SELECT created_at, batch_id FROM"
                             " api_batches WHERE batch_id = $3))"
                             " ORDER BY created_at DESC, batch_id DESC LIMIT $4"
                           : "SELECT gantry_api_openai_batch(b), $5 FROM api_batches b"
                             " WHERE tenant_id = $1 AND flavor = $2 AND ($3::text IS NULL OR"
                             " (created_at, batch_id) < (SELECT created_at, batch_id FROM"
                             " api_batches WHERE batch_id = $3))"
                             " ORDER BY created_at DESC, batch_id DESC LIMIT $4",
                      5, p);
    pool_put(h, c);
    if (!res)
        return reply_err(conn, r->flavor, 503, "storage unavailable");
    json_t *data = json_array();
    int n = PQntuples(res);
    for (int i = 0; i < n && i < limit; i++)
        json_array_append_new(data, row_json(res, i, 0));
    PQclear(res);
    size_t k = json_array_size(data);
    json_t *first = k ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = k ? json_object_get(json_array_get(data, k - 1), "id") : NULL;
    json_t *o =
        json_pack("{s:O,s:O,s:O,s:b}", "data", data, "first_id", first ? first : json_null(),
                  "last_id", last ? last : json_null(), "has_more", n > limit);
    json_decref(data);
    if (o && !anth)
        json_object_set_new(o, "object", json_string("list"));
    return reply_json(conn, 200, o);
}

/* cancelling (OpenAI) / canceling (Anthropic): the pump cancels what has not
 * ended through the control topic and ends the batch when every line has. */
static enum MHD_Result batch_cancel(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r,
                                    const char *id, const char *flavor)
{
    PGconn *c = pool_get(h);
    if (!c)
        return reply_err(conn, r->flavor, 503, "storage unavailable");
    const char *p[3] = {id, r->tenant, flavor};
    PGresult *res = q(c,
                      "WITH u AS (UPDATE api_batches SET status = 'cancelling', ending = 'cancel',"
                      " cancelling_at = now() WHERE batch_id = $1 AND tenant_id = $2 AND"
                      " flavor = $3 AND status IN ('validating', 'in_progress') AND ending IS NULL"
                      " RETURNING 1)"
                      " SELECT status, (SELECT count(*) FROM u) FROM api_batches"
                      " WHERE batch_id = $1 AND tenant_id = $2 AND flavor = $3",
                      3, p);
    enum MHD_Result ret;
    if (!res)
        ret = reply_err(conn, r->flavor, 503, "storage unavailable");
    else if (PQntuples(res) != 1)
        ret = reply_err(conn, r->flavor, 404,
                        r->flavor == ANTHROPIC ? "No such message batch" : "No such Batch object");
    else if (strcmp(PQgetvalue(res, 0, 1), "0") == 0 &&
             strcmp(PQgetvalue(res, 0, 0), "cancelling") != 0 &&
             strcmp(PQgetvalue(res, 0, 0), "cancelled") != 0 && r->flavor == OPENAI)
        ret = reply_err(conn, OPENAI, 409, "Cannot cancel a batch that has ended");
    else if (r->flavor == OPENAI)
        ret = batch_reply(c, conn, id, r->tenant);
    else {
        char base[300];
        const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
        snprintf(base, sizeof(base), "http://%s", host ? host : "localhost");
        const char *pa[3] = {id, r->tenant, base};
        PGresult *a = q(c,
                        "SELECT gantry_api_anthropic_batch(b, $3) FROM api_batches b WHERE"
                        " batch_id = $1 AND tenant_id = $2 AND flavor = 'anthropic'",
                        3, pa);
        json_t *o = row_json(a, 0, 0);
        PQclear(a);
        ret = o ? reply_json(conn, 200, o) : reply_err(conn, ANTHROPIC, 503, "storage unavailable");
    }
    PQclear(res);
    pool_put(h, c);
    return ret;
}

/* ---- Anthropic ------------------------------------------------------------ */

static int anth_custom_id_ok(const char *id, size_t len)
{
    if (!id || !len || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '_' && id[i] != '-')
            return 0;
    return 1;
}

static enum MHD_Result anth_get(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r,
                                const char *id, PGconn *given)
{
    char base[300];
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    snprintf(base, sizeof(base), "http://%s", host ? host : "localhost");
    PGconn *c = given ? given : pool_get(h);
    if (!c)
        return reply_err(conn, ANTHROPIC, 503, "storage unavailable");
    const char *p[3] = {id, r->tenant, base};
    PGresult *res = q(c,
                      "SELECT gantry_api_anthropic_batch(b, $3) FROM api_batches b WHERE"
                      " batch_id = $1 AND tenant_id = $2 AND flavor = 'anthropic'",
                      3, p);
    if (!given)
        pool_put(h, c);
    json_t *o = row_json(res, 0, 0);
    int had = res != NULL;
    PQclear(res);
    if (!had)
        return reply_err(conn, ANTHROPIC, 503, "storage unavailable");
    return o ? reply_json(conn, 200, o) : reply_err(conn, ANTHROPIC, 404, "No such message batch");
}

/* The vendor validates the request list at create (400 for the whole call);
 * params that do not map to a Gantry request end errored. */
static enum MHD_Result anth_create(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r)
{
    json_t *body = r->body ? gt_json_parse(r->body, r->body_len, 0, NULL) : NULL;
    json_t *reqs = json_object_get(body, "requests");
    PGconn *c = NULL;
    lines_t ls = {0};
    enum MHD_Result ret;
    char batch_id[48], msg[200];
    size_t i;
    json_t *it;
    if (!json_is_array(reqs) || !json_array_size(reqs)) {
        ret = reply_err(conn, ANTHROPIC, 400, "requests: must be a non-empty array");
        goto out;
    }
    if ((int64_t)json_array_size(reqs) > h->ac->max_file_lines) {
        ret = reply_err(conn, ANTHROPIC, 400, "requests: more than the limit (api.max_file_lines)");
        goto out;
    }
    idset_t seen = {0};
    json_array_foreach (reqs, i, it) {
        json_t *jc = json_object_get(it, "custom_id");
        const char *cid = json_string_value(jc);
        int dup = cid ? idset_add(&seen, cid) : 0;
        if (!anth_custom_id_ok(cid, cid ? json_string_length(jc) : 0) || dup) {
            idset_free(&seen);
            snprintf(msg, sizeof(msg),
                     dup ? "requests.%zu.custom_id: duplicate"
                         : "requests.%zu.custom_id: 1-64 characters of"
                           " a-z A-Z 0-9 _ -",
                     i);
            ret = reply_err(conn, ANTHROPIC, 400, msg);
            goto out;
        }
    }
    idset_free(&seen);
    if (!(c = pool_get(h))) {
        ret = reply_err(conn, ANTHROPIC, 503, "storage unavailable");
        goto out;
    }
    new_id("msgbatch_", batch_id, sizeof(batch_id));
    char secs[24], n[16];
    snprintf(secs, sizeof(secs), "%lld", (long long)h->ac->max_window_s);
    const char *pb[3] = {batch_id, r->tenant, secs};
    if (exec_ok(c, "BEGIN", 0, NULL) ||
        exec_ok(c,
                "INSERT INTO api_batches (batch_id, tenant_id, flavor, endpoint, status,"
                " expires_at) VALUES ($1, $2, 'anthropic', '/v1/messages', 'validating',"
                " now() + make_interval(secs => $3::bigint))",
                3, pb)) {
        ret = reply_err(conn, ANTHROPIC, 503, "storage unavailable");
        goto out;
    }
    ls.c = c;
    ls.batch_id = batch_id;
    ls.tenant = r->tenant;
    ls.rows = json_array();
    ls.errors = json_array();
    json_array_foreach (reqs, i, it) {
        char why[256] = "";
        json_t *req =
            gt_api_anthropic_params(h->ac, json_object_get(it, "params"), why, sizeof(why));
        if (add_line(&ls, h, json_string_value(json_object_get(it, "custom_id")), why, req)) {
            ret = reply_err(conn, ANTHROPIC, 503, "storage unavailable");
            goto out;
        }
    }
    snprintf(n, sizeof(n), "%d", ls.n);
    const char *pn[2] = {batch_id, n};
    if (lines_flush(&ls) ||
        exec_ok(c,
                "UPDATE api_batches SET status = 'in_progress', in_progress_at = now(),"
                " total = $2 WHERE batch_id = $1",
                2, pn) ||
        exec_ok(c, "COMMIT", 0, NULL)) {
        ret = reply_err(conn, ANTHROPIC, 503, "storage unavailable");
        goto out;
    }
    ret = anth_get(h, conn, r, batch_id, c);
out:
    json_decref(ls.rows);
    json_decref(ls.errors);
    idset_free(&ls.seen);
    json_decref(body);
    pool_put(h, c);
    return ret;
}

/* Results JSONL, read from the lines a page at a time (ended batches only). */
typedef struct results {
    gt_api_http_t *h;
    char batch_id[64];
    int after; /* last line sent */
    char *buf;
    size_t len, pos;
    int done;
} results_t;

static ssize_t results_read(void *cls, uint64_t pos, char *out, size_t max)
{
    results_t *rs = cls;
    while (rs->pos >= rs->len) {
        if (rs->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        free(rs->buf);
        rs->buf = NULL;
        rs->len = rs->pos = 0;
        char after[16];
        snprintf(after, sizeof(after), "%d", rs->after);
        const char *p[2] = {rs->batch_id, after};
        PGconn *c = pool_get(rs->h);
        if (!c)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        PGresult *r = q(c,
                        "SELECT max(line), string_agg(t, E'\\n' ORDER BY line) || E'\\n', count(*)"
                        " FROM (SELECT l.line, gantry_api_anthropic_line(l)::text AS t"
                        " FROM api_batch_lines l WHERE batch_id = $1 AND line > $2"
                        " ORDER BY line LIMIT 1000) s",
                        2, p);
        pool_put(rs->h, c);
        if (!r)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (PQgetisnull(r, 0, 0)) {
            PQclear(r);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        rs->after = atoi(PQgetvalue(r, 0, 0));
        rs->done = atoi(PQgetvalue(r, 0, 2)) < 1000;
        rs->buf = strdup(PQgetvalue(r, 0, 1));
        rs->len = rs->buf ? strlen(rs->buf) : 0;
        PQclear(r);
        if (!rs->buf)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = rs->len - rs->pos;
    if (n > max)
        n = max;
    memcpy(out, rs->buf + rs->pos, n);
    rs->pos += n;
    return (ssize_t)n;
}

static void results_free(void *cls)
{
    results_t *rs = cls;
    free(rs->buf);
    free(rs);
}

static enum MHD_Result anth_results(gt_api_http_t *h, struct MHD_Connection *conn, req_t *r,
                                    const char *id)
{
    PGconn *c = pool_get(h);
    if (!c)
        return reply_err(conn, ANTHROPIC, 503, "storage unavailable");
    const char *p[2] = {id, r->tenant};
    PGresult *res = q(c,
                      "SELECT status FROM api_batches WHERE batch_id = $1 AND tenant_id = $2"
                      " AND flavor = 'anthropic'",
                      2, p);
    pool_put(h, c);
    if (!res)
        return reply_err(conn, ANTHROPIC, 503, "storage unavailable");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return reply_err(conn, ANTHROPIC, 404, "No such message batch");
    }
    const char *st = PQgetvalue(res, 0, 0);
    int ended = !strcmp(st, "completed") || !strcmp(st, "cancelled") || !strcmp(st, "expired") ||
                !strcmp(st, "failed");
    PQclear(res);
    if (!ended)
        return reply_err(conn, ANTHROPIC, 400, "results are available once the batch has ended");
    results_t *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return MHD_NO;
    rs->h = h;
    snprintf(rs->batch_id, sizeof(rs->batch_id), "%s", id);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                                  results_read, rs, results_free);
    if (!resp) {
        free(rs);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/binary");
    enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    gt_metric_add(m_requests, 1, "2xx");
    return ret;
}

/* ---- routing -------------------------------------------------------------- */

/* Matches "prefix{id}suffix" with an id of [A-Za-z0-9_-]; copies the id. */
static int route(const char *url, const char *prefix, const char *suffix, char *id, size_t len)
{
    size_t pl = strlen(prefix);
    if (strncmp(url, prefix, pl) != 0)
        return 0;
    const char *s = url + pl, *e = s;
    while (*e && *e != '/')
        e++;
    if (e == s || (size_t)(e - s) >= len || strcmp(e, suffix) != 0)
        return 0;
    memcpy(id, s, (size_t)(e - s));
    id[e - s] = 0;
    return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    gt_api_http_t *h = cls;
    req_t *r = *con_cls;
    char id[64];
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"),
        del = !strcmp(method, "DELETE");
    if (!r) {
        if (get && !strcmp(url, "/health"))
            return reply_buf(conn, 200, "text/plain", strdup("ok\n"), 3);
        if (!(r = calloc(1, sizeof(*r))))
            return MHD_NO;
        *con_cls = r;
        r->flavor = !strncmp(url, "/v1/messages", 12) ? ANTHROPIC : OPENAI;
        r->auth_status = authenticate(h, conn, r);
        if (!r->auth_status && post && !strcmp(url, "/v1/files")) {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
            const char *bd = ct ? strstr(ct, "boundary=") : NULL;
            if (bd) {
                bd += 9;
                size_t bl = strcspn(bd, "\"; ");
                if (*bd == '"')
                    bl = strcspn(++bd, "\"");
                if (bl + 5 < sizeof(r->closing))
                    snprintf(r->closing, sizeof(r->closing), "--%.*s--", (int)bl, bd);
            }
            r->up.buf = malloc(CHUNK_BYTES);
            r->pp = r->up.buf ? MHD_create_post_processor(conn, 64 * 1024, post_iter, r) : NULL;
            if (!r->pp)
                r->up.error = "file: multipart/form-data with fields file and purpose expected";
            r->up.status = 400;
            new_id("file-", r->up.file_id, sizeof(r->up.file_id));
        }
        return MHD_YES;
    }
    if (*upload_size) {
        tls_h = h;
        if (r->pp && !r->up.error) {
            /* MHD refuses an epilogue after the closing boundary (node's
             * form-data encoders send "\r\n" there): the closing boundary
             * seen in the raw tail decides instead (upload_end). */
            MHD_post_process(r->pp, upload, *upload_size);
            size_t keep = sizeof(r->tail) - 1, n = *upload_size;
            if (n >= keep) {
                memcpy(r->tail, upload + n - keep, keep);
                r->tail_len = keep;
            } else {
                if (r->tail_len + n > keep) {
                    size_t drop = r->tail_len + n - keep;
                    memmove(r->tail, r->tail + drop, r->tail_len - drop);
                    r->tail_len -= drop;
                }
                memcpy(r->tail + r->tail_len, upload, n);
                r->tail_len += n;
            }
            r->tail[r->tail_len] = 0;
        } else if (!r->pp && !r->auth_status) {
            if (r->body_len + *upload_size > (size_t)h->ac->max_file_bytes) {
                r->too_large = 1;
            } else {
                char *nb = realloc(r->body, r->body_len + *upload_size + 1);
                if (!nb)
                    return MHD_NO;
                r->body = nb;
                memcpy(r->body + r->body_len, upload, *upload_size);
                r->body_len += *upload_size;
                r->body[r->body_len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->auth_status == 401)
        return reply_err(conn, r->flavor, 401, "Invalid API key");
    if (r->auth_status)
        return reply_err(conn, r->flavor, 503, "storage unavailable");
    if (r->too_large)
        return reply_err(conn, r->flavor, 413, "request body too large");

    if (!strcmp(url, "/v1/files") && post)
        return upload_end(h, conn, r);
    if (route(url, "/v1/files/", "/content", id, sizeof(id)) && get)
        return file_get(h, conn, r, id, 1, 0);
    if (route(url, "/v1/files/", "", id, sizeof(id)) && (get || del))
        return file_get(h, conn, r, id, 0, del);
    if (!strcmp(url, "/v1/batches") && post)
        return batch_create(h, conn, r);
    if (!strcmp(url, "/v1/batches") && get)
        return batch_list(h, conn, r, "openai");
    if (route(url, "/v1/batches/", "/cancel", id, sizeof(id)) && post)
        return batch_cancel(h, conn, r, id, "openai");
    if (route(url, "/v1/batches/", "", id, sizeof(id)) && get) {
        PGconn *c = pool_get(h);
        if (!c)
            return reply_err(conn, OPENAI, 503, "storage unavailable");
        enum MHD_Result ret = batch_reply(c, conn, id, r->tenant);
        pool_put(h, c);
        return ret;
    }
    if (!strcmp(url, "/v1/messages/batches") && post)
        return anth_create(h, conn, r);
    if (!strcmp(url, "/v1/messages/batches") && get)
        return batch_list(h, conn, r, "anthropic");
    if (route(url, "/v1/messages/batches/", "/cancel", id, sizeof(id)) && post)
        return batch_cancel(h, conn, r, id, "anthropic");
    if (route(url, "/v1/messages/batches/", "/results", id, sizeof(id)) && get)
        return anth_results(h, conn, r, id);
    if (route(url, "/v1/messages/batches/", "", id, sizeof(id)) && get)
        return anth_get(h, conn, r, id, NULL);
    return reply_err(conn, r->flavor, 404, "Unknown request URL");
}

gt_api_http_t *gt_api_http_start(const gt_config_t *cfg, const gt_api_config_t *ac, char *err,
                                 size_t errlen)
{
    gt_api_http_t *h = calloc(1, sizeof(*h));
    if (!h || !(h->conninfo = strdup(cfg->pg_conninfo ? cfg->pg_conninfo : "")) ||
        !(h->free_conns = calloc((size_t)ac->pg_connections, sizeof(PGconn *)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!m_requests)
        m_requests = gt_metrics_counter("gantry_api_requests_total",
                                        "HTTP requests answered by gantry-api", "class");
    h->ac = ac;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ac->port)};
    if (inet_pton(AF_INET, ac->host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "api.host: %s is not an IPv4 address", ac->host);
        goto fail;
    }
    h->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t)ac->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_TIMEOUT, 120u,
        MHD_OPTION_CONNECTION_LIMIT, 256u, MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "api: cannot listen on %s:%d", ac->host, ac->port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : ac->port;
    return h;
fail:
    if (h) {
        free(h->conninfo);
        free(h->free_conns);
        free(h);
    }
    return NULL;
}

int gt_api_http_port(const gt_api_http_t *h)
{
    return h->port;
}

void gt_api_http_stop(gt_api_http_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    for (int i = 0; i < h->n_free; i++)
        PQfinish(h->free_conns[i]);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->free_conns);
    free(h->conninfo);
    free(h);
}
