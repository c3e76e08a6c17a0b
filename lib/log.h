/* log.h - structured logs: one JSON object per line on stderr, thread safe. */
#ifndef GT_LOG_H
#define GT_LOG_H

typedef enum { GT_LOG_DEBUG, GT_LOG_INFO, GT_LOG_WARN, GT_LOG_ERROR } gt_log_level_t;

/* Sets the process name written on every line (default "gantry"). */
void gt_log_init(const char *process, gt_log_level_t level);
void gt_log_set_level(gt_log_level_t level);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int gt_log_parse_level(const char *s);

/* Context fields: any may be NULL. Never pass secrets, prompts or outputs.
 * trace_id is a 32-hex trace id or a whole traceparent (its trace id is written;
 * anything else is left out). */
typedef struct gt_log_ctx {
    const char *request_id;
    const char *task_id;
    const char *tenant_id;
    const char *trace_id;
} gt_log_ctx_t;

void gt_log(gt_log_level_t level, const gt_log_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define gt_debug(...) gt_log(GT_LOG_DEBUG, NULL, __VA_ARGS__)
#define gt_info(...) gt_log(GT_LOG_INFO, NULL, __VA_ARGS__)
#define gt_warn(...) gt_log(GT_LOG_WARN, NULL, __VA_ARGS__)
#define gt_error(...) gt_log(GT_LOG_ERROR, NULL, __VA_ARGS__)

#endif
