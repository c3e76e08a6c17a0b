/* message.c - building, sending and parsing Gantry's JSON messages on Kafka. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "clock.h"
#include "json_text.h"
#include "message.h"
#include "digest.h"
#include "rand.h"

json_t *gt_message_parse(const gt_msg_t *msg, const gt_schema_t *schema, const char **code,
                         char *err, size_t errlen)
{
    gt_json_error_t jerr;
    json_t *obj =
        msg->value ? gt_json_parse(msg->value, msg->len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!obj) {
        *code = "invalid_json";
        if (msg->value)
            snprintf(err, errlen, "not JSON: %s at byte %zu", jerr.text, jerr.position);
        else
            snprintf(err, errlen, "empty message");
        return NULL;
    }
    if (!json_is_object(obj)) {
        *code = "schema_violation";
        snprintf(err, errlen, ": must be a JSON object");
        json_decref(obj);
        return NULL;
    }
    if (schema && gt_schema_validate(schema, obj, err, errlen) != 0) {
        *code = "schema_violation";
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Room kept below the limit for the key, headers and record overhead. */
#define DLQ_MARGIN 4096
/* The longest prefix a truncated entry keeps: enough to recognise the message. */
#define DLQ_PREFIX_MAX 65536

/* Replaces o's "original" with a base64 prefix of the bytes that fits in
 * room characters, and says so: original_truncated, _size, _sha256. */
static int dlq_truncate(json_t *o, const unsigned char *bytes, size_t len, size_t room)
{
    char hex[65];
    gt_sha256_hex(bytes, len, hex);
    size_t prefix = room / 4 * 3;
    if (prefix > DLQ_PREFIX_MAX)
        prefix = DLQ_PREFIX_MAX;
    if (prefix > len)
        prefix = len;
    char *b64 = gt_base64_encode(bytes, prefix);
    if (!b64)
        return -1;
    json_object_set_new(o, "original", json_string(b64));
    free(b64);
    json_object_set_new(o, "original_truncated", json_true());
    json_object_set_new(o, "original_size", json_integer((json_int_t)len));
    json_object_set_new(o, "original_sha256", json_string(hex));
    return 0;
}

json_t *gt_dlq_build(const gt_msg_t *msg, const char *stage, const char *code, const char *message,
                     const char *request_id, size_t max_bytes)
{
    char ts[40];
    const unsigned char *bytes = msg->value ? msg->value : (const unsigned char *)"";
    size_t len = msg->value ? msg->len : 0;
    /* base64 grows 4/3; past the limit only a prefix goes (encoded below). */
    size_t full = 4 * ((len + 2) / 3);
    int truncate = max_bytes > 0 && full + DLQ_MARGIN > max_bytes;
    char *orig = truncate ? strdup("") : gt_base64_encode(bytes, len);
    char *key = msg->key ? gt_base64_encode(msg->key, msg->key_len) : NULL;
    /* An error message could be anything (a validator's path, SQL): bounded. */
    char brief[1024];
    snprintf(brief, sizeof(brief), "%s", message ? message : "");
    json_t *o =
        orig ? json_pack("{s:s, s:{s:s, s:i, s:I}, s:s, s:{s:s, s:s}, s:s, s:s?, s:s, "
                         "s:s?}",
                         "schema", "gantry.dlq.v1", "source", "topic", msg->topic, "partition",
                         (int)msg->partition, "offset", (json_int_t)msg->offset, "stage", stage,
                         "error", "code", code, "message", brief, "original", orig, "original_key",
                         key, "failed_at", gt_clock_fmt(gt_clock_wall_ms(), ts, sizeof(ts)),
                         "request_id", request_id)
             : NULL;
    free(orig);
    if (o && !key)
        json_object_set_new(o, "original_key", json_null());
    if (o && !request_id)
        json_object_set_new(o, "request_id", json_null());
    if (o && truncate) {
        /* What the rest takes (with room for the three fields it adds). */
        size_t rest = json_dumpb(o, NULL, 0, JSON_COMPACT) + 160;
        size_t room = rest + DLQ_MARGIN < max_bytes ? max_bytes - DLQ_MARGIN - rest : 0;
        if (dlq_truncate(o, bytes, len, room) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    free(key);
    return o;
}

int gt_dlq_send(gt_effect_t *e, const gt_config_t *cfg, const gt_msg_t *msg, const char *stage,
                const char *code, const char *message, const char *request_id)
{
    json_t *o =
        gt_dlq_build(msg, stage, code, message, request_id, (size_t)cfg->kafka_message_max_bytes);
    if (!o)
        return -1;
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return -1;
    int rc = gt_effect_add(e, cfg->topics.dlq, msg->key, msg->key ? msg->key_len : 0, text,
                           strlen(text), NULL, 0);
    free(text);
    return rc;
}

int gt_result_reply_topic(const gt_config_t *cfg, const char *reply_topic)
{
    return reply_topic && *reply_topic && strcmp(reply_topic, cfg->topics.results) != 0;
}

int gt_result_add_text(gt_effect_t *e, const gt_config_t *cfg, const char *reply_topic,
                       const char *request_id, const char *text, size_t len,
                       const gt_header_t *headers, size_t n_headers)
{
    size_t klen = strlen(request_id);
    if (gt_effect_add(e, cfg->topics.results, request_id, klen, text, len, headers, n_headers) != 0)
        return -1;
    if (gt_result_reply_topic(cfg, reply_topic))
        return gt_effect_add(e, reply_topic, request_id, klen, text, len, headers, n_headers);
    return 0;
}

int gt_result_add(gt_effect_t *e, const gt_config_t *cfg, const char *reply_topic,
                  const char *request_id, const json_t *result, const gt_header_t *headers,
                  size_t n_headers)
{
    char buf[8192];
    size_t len;
    char *text = gt_json_dump(result, buf, sizeof(buf), &len);
    if (!text)
        return -1;
    int rc = gt_result_add_text(e, cfg, reply_topic, request_id, text, len, headers, n_headers);
    if (text != buf)
        free(text);
    return rc;
}

json_t *gt_event_build(const char *type, const char *source, const char *event_id, json_t *data)
{
    char id[33], ts[40];
    if (!event_id) {
        gt_random_hex(id);
        event_id = id;
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "schema", "gantry.event.v1", "event_id",
                     event_id, "type", type, "source", source, "at",
                     gt_clock_fmt(gt_clock_wall_ms(), ts, sizeof(ts)), "data",
                     data ? data : json_object());
}

void gt_random_hex(char out[33])
{
    unsigned char raw[16];
    if (gt_rand_secure(raw, sizeof(raw)) != 0) { /* never expected; fall back to rand() */
        for (size_t i = 0; i < sizeof(raw); i++)
            raw[i] = (unsigned char)rand(); /* NOLINT(cert-msc30-c,cert-msc50-cpp) */
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}
