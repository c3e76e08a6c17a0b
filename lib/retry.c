/* retry.c - retry policy: retryable outcomes, exponential backoff with jitter, Retry-After. */
#include "retry.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Retry-After values beyond a day are nonsense from a server; clamp them so
 * the arithmetic below can never overflow. The caller's max_ms caps further. */
#define RETRY_AFTER_MAX_MS (24LL * 3600 * 1000)

void gt_retry_policy_default(gt_retry_policy_t *p)
{
    p->max_retries = 3;
    p->base_ms = 100;
    p->max_ms = 30000;
    p->jitter = 0.2;
}

int gt_retry_is_retryable(long http_status)
{
    if (http_status == 0 || http_status == 408 || http_status == 429)
        return 1;
    return http_status >= 500 && http_status <= 599;
}

int64_t gt_retry_backoff_ms(const gt_retry_policy_t *p, int retry, int64_t retry_after_ms,
                            double rnd)
{
    int64_t cap = p->max_ms > 0 ? p->max_ms : 0;
    double jitter = p->jitter;
    double d;
    int64_t delay;

    if (retry < 1)
        retry = 1;
    if (jitter < 0)
        jitter = 0;
    if (jitter > 1)
        jitter = 1;
    if (!(rnd >= 0)) /* also catches NaN */
        rnd = 0;
    if (rnd > 1)
        rnd = 1;

    /* Computed in double: base * 2^62 would overflow int64 but the cap makes
     * anything past it irrelevant. */
    d = (double)(p->base_ms > 0 ? p->base_ms : 0);
    for (int i = 1; i < retry && d < (double)cap; i++)
        d *= 2;
    d *= 1.0 + jitter * (rnd - 0.5);
    if (d > (double)cap)
        d = (double)cap;
    delay = (int64_t)(d + 0.5);

    if (retry_after_ms >= 0 && retry_after_ms > delay)
        delay = retry_after_ms;
    if (delay > cap)
        delay = cap;
    return delay < 0 ? 0 : delay;
}

int64_t gt_retry_after_parse(const char *value, int64_t now_wall_ms)
{
    const char *s, *e;
    char buf[128];
    size_t n;

    if (!value)
        return -1;
    s = value;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    n = (size_t)(e - s);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';

    if (isdigit((unsigned char)buf[0])) {
        /* delta-seconds: digits only (RFC 9110 section 10.2.3). */
        char *end;
        unsigned long long secs;

        errno = 0;
        secs = strtoull(buf, &end, 10);
        if (*end != '\0')
            return -1;
        if (errno == ERANGE || secs > RETRY_AFTER_MAX_MS / 1000)
            return RETRY_AFTER_MAX_MS;
        return (int64_t)secs * 1000;
    }

    /* HTTP-date in any of the three forms RFC 9110 accepts; curl_getdate
     * parses them all and is thread safe. */
    {
        time_t t = curl_getdate(buf, NULL);
        int64_t ms;

        if (t == (time_t)-1)
            return -1;
        ms = (int64_t)t * 1000 - now_wall_ms;
        if (ms < 0)
            return 0;
        return ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
    }
}
