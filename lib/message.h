/* message.h - building, sending and parsing Gantry's JSON messages on Kafka:
 * the envelope helpers every process shares (DLQ entries, events). */
#ifndef GT_MESSAGE_H
#define GT_MESSAGE_H

#include <jansson.h>

#include "config.h"
#include "effect.h"
#include "kafka.h"
#include "schema.h"

/* Parses msg's value as a JSON object and validates it against schema (may be
 * NULL). Returns the object (caller owns), or NULL with *code set to
 * "invalid_json" or "schema_violation" and a reason in err. */
json_t *gt_message_parse(const gt_msg_t *msg, const gt_schema_t *schema, const char **code,
                         char *err, size_t errlen);

/* Builds a gantry.dlq.v1 entry for msg: original bytes and key base64, source
 * topic/partition/offset, stage, error code and message (cut at 1 KiB).
 * Always fits max_bytes (0: no limit; a few KiB are kept for the key and
 * overhead): when the whole original would not, it carries original_size,
 * original_sha256 and a base64 prefix of at most 64 KiB in original, with
 * original_truncated true. Caller owns it; NULL on out of memory. */
json_t *gt_dlq_build(const gt_msg_t *msg, const char *stage, const char *code, const char *message,
                     const char *request_id, size_t max_bytes);
/* Builds the entry and adds it to e for cfg->topics.dlq, keyed like the
 * original. Returns 0, or -1 on out of memory (nothing added). */
int gt_dlq_send(gt_effect_t *e, const gt_config_t *cfg, const gt_msg_t *msg, const char *stage,
                const char *code, const char *message, const char *request_id);

/* 1 when reply_topic names a topic of its own (set, non-empty, not
 * cfg->topics.results): a result goes there as well as to the results topic. */
int gt_result_reply_topic(const gt_config_t *cfg, const char *reply_topic);

/* Adds a gantry.result.v1 to e: to cfg->topics.results always and, when
 * gt_result_reply_topic(cfg, reply_topic), to it too (keyed by request_id). Returns
 * 0, or -1 on out of memory (then e may hold one of the two: abandon it). */
int gt_result_add(gt_effect_t *e, const gt_config_t *cfg, const char *reply_topic,
                  const char *request_id, const json_t *result, const gt_header_t *headers,
                  size_t n_headers);
/* The same for a result already serialised (text, len bytes). */
int gt_result_add_text(gt_effect_t *e, const gt_config_t *cfg, const char *reply_topic,
                       const char *request_id, const char *text, size_t len,
                       const gt_header_t *headers, size_t n_headers);

/* Builds a gantry.event.v1 (event_id random unless given, at = now); steals data. */
json_t *gt_event_build(const char *type, const char *source, const char *event_id, json_t *data);

/* Writes 32 random hex characters (+NUL) into out[33]. */
void gt_random_hex(char out[33]);

#endif
