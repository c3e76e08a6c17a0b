/* slots.c - provider slots and rpm/tpm windows shared through PostgreSQL (see slots.h).
 *
 * Per (provider, scope) a "gate" keeps the local waiters in arrival order and
 * one query in flight for the oldest: take a free slot row, then count the
 * request in the minute's window. A refusal backs off (slots: 10 to 250 ms
 * with jitter, or at once when this process frees one; windows: until the
 * next minute). A request passes the tenant's gate, then the provider's. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "pg.h"
#include "rand.h"
#include "slots.h"
#include "wstats.h"

#define SLOT_BACKOFF_MIN_MS 10
#define SLOT_BACKOFF_MAX_MS 250
#define SLOT_ERROR_BACKOFF_MS 500
#define SWEEP_MS 50
#define CLOSE_WAIT_MS 3000

typedef struct gate gate_t;

struct gt_slot_req {
    gt_slots_t *s;
    gate_t *gates[2];
    int n_gates;
    int stage;   /* gate being passed; n_gates: granted */
    int phase;   /* 0: slot row, 1: window */
    int held[2]; /* slot row per gate, -1: none */
    char *task_id;
    int64_t give_up;
    gt_slot_cb cb;
    void *arg;
    gt_slot_req_t *next; /* in its gate's queue */
    int queued;
    int querying; /* a query for it is in flight */
    int dead;     /* withdrawn or released: free when querying ends */
};

struct gate {
    gt_slots_t *s;
    char *provider, *scope;
    gt_provider_limits_t lim;
    int rows_ready;
    gt_slot_req_t *head, *tail;
    int busy;
    int waiting; /* timer armed for the next poll */
    int64_t backoff;
    uv_timer_t timer;
    gate_t *next;
};

struct gt_slots {
    uv_loop_t *loop;
    const gt_config_t *cfg;
    gt_pg_t *pg;
    char holder[300];
    char lease_ms[32];
    gate_t *gates;
    int held;
    int waiting_total;
    uv_timer_t sweep, renew, closer;
    int handles_open;
    int closing;
    int64_t close_until;
};

static void gate_poll(gate_t *g);
static void gate_kick(gate_t *g);

int gt_slots_needed(const gt_provider_t *p, const char *tenant)
{
    const gt_provider_limits_t *t = gt_provider_tenant_limits(p, tenant);
    return p->limits.max_in_flight || p->limits.rpm || p->limits.tpm ||
           (t && (t->max_in_flight || t->rpm || t->tpm));
}

static void on_ignore(const PGresult *res, const char *err, void *arg)
{
    if (err)
        gt_warn("provider slots: %s: %s", (const char *)arg, err);
    (void)res;
}

static void req_free(gt_slot_req_t *r)
{
    free(r->task_id);
    free(r);
}

/* ---- gates ----------------------------------------------------------------- */

static void on_gate_timer(uv_timer_t *t)
{
    gate_t *g = t->data;
    g->waiting = 0;
    gate_poll(g);
}

static gate_t *gate_get(gt_slots_t *s, const char *provider, const char *scope,
                        const gt_provider_limits_t *lim)
{
    for (gate_t *g = s->gates; g; g = g->next)
        if (strcmp(g->provider, provider) == 0 && strcmp(g->scope, scope) == 0)
            return g;
    gate_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->s = s;
    g->provider = strdup(provider);
    g->scope = strdup(scope);
    g->lim = *lim;
    if (!g->provider || !g->scope) {
        free(g->provider);
        free(g->scope);
        free(g);
        return NULL;
    }
    g->backoff = SLOT_BACKOFF_MIN_MS;
    uv_timer_init(s->loop, &g->timer);
    g->timer.data = g;
    s->handles_open++;
    g->next = s->gates;
    s->gates = g;
    return g;
}

static void gate_push(gate_t *g, gt_slot_req_t *r)
{
    r->next = NULL;
    r->queued = 1;
    if (g->tail)
        g->tail->next = r;
    else
        g->head = r;
    g->tail = r;
    g->s->waiting_total++;
}

static void gate_unlink(gate_t *g, gt_slot_req_t *r)
{
    gt_slot_req_t *prev = NULL;
    for (gt_slot_req_t *q = g->head; q; prev = q, q = q->next) {
        if (q != r)
            continue;
        if (prev)
            prev->next = q->next;
        else
            g->head = q->next;
        if (g->tail == q)
            g->tail = prev;
        r->next = NULL;
        r->queued = 0;
        g->s->waiting_total--;
        return;
    }
}

static void slot_release_row(gt_slots_t *s, gate_t *g, int slot)
{
    char num[16];
    snprintf(num, sizeof(num), "%d", slot);
    const char *params[] = {g->provider, g->scope, num, s->holder};
    gt_pg_query(s->pg,
                "UPDATE gantry_provider_slots SET holder = NULL, task_id = NULL, lease_until = NULL"
                " WHERE provider = $1 AND scope = $2 AND slot = $3::int AND holder = $4",
                4, params, on_ignore, "release");
    s->held--;
    gt_wstats_slots(g->provider, g->scope, -1);
}

/* Gives back every slot row r holds and kicks the gates it held them at. */
static void req_drop_held(gt_slot_req_t *r)
{
    for (int i = 0; i < r->n_gates; i++)
        if (r->held[i] >= 0) {
            slot_release_row(r->s, r->gates[i], r->held[i]);
            r->held[i] = -1;
            if (!r->s->closing)
                gate_kick(r->gates[i]);
        }
}

static void gate_backoff(gate_t *g, int window_full)
{
    int64_t wait;
    if (window_full) {
        /* The budget renews with the next calendar minute. */
        int64_t now = gt_clock_wall_ms();
        wait = 60000 - now % 60000 + (int64_t)(gt_rand_unit() * 200);
    } else {
        wait = g->backoff / 2 + (int64_t)(gt_rand_unit() * (double)g->backoff);
        g->backoff = g->backoff * 2 > SLOT_BACKOFF_MAX_MS ? SLOT_BACKOFF_MAX_MS : g->backoff * 2;
    }
    g->waiting = 1;
    uv_timer_start(&g->timer, on_gate_timer, (uint64_t)wait, 0);
}

static void req_advance(gt_slot_req_t *r);

static void on_answer(const PGresult *res, const char *err, void *arg)
{
    gt_slot_req_t *r = arg;
    gt_slots_t *s = r->s;
    gate_t *g = r->gates[r->stage];
    int phase = r->phase;
    r->querying = 0;
    g->busy = 0;
    int got = !err && res && PQntuples(res) > 0;
    if (got && phase == 0) {
        r->held[r->stage] = atoi(PQgetvalue(res, 0, 0));
        s->held++;
        gt_wstats_slots(g->provider, g->scope, 1);
    }
    if (r->dead) {
        req_drop_held(r);
        req_free(r);
        if (!s->closing)
            gate_poll(g);
        return;
    }
    if (err) {
        gt_warn("provider slots: %s (retrying)", err);
        g->waiting = 1;
        uv_timer_start(&g->timer, on_gate_timer, SLOT_ERROR_BACKOFF_MS, 0);
        return;
    }
    if (!got) {
        gate_backoff(g, phase == 1);
        return;
    }
    g->backoff = SLOT_BACKOFF_MIN_MS;
    if (phase == 0 && (g->lim.rpm || g->lim.tpm)) {
        r->phase = 1;
        gate_poll(g);
        return;
    }
    /* This gate is passed. */
    gate_unlink(g, r);
    r->phase = 0;
    r->stage++;
    req_advance(r);
    if (!s->closing)
        gate_poll(g);
}

/* Safe to re-run (gt_pg re-sends after a lost connection whose first attempt
 * may have committed): a slot this task already holds is taken again before
 * any free one, so a re-run never holds two. */
const char gt_slots_sql_acquire[] =
    "UPDATE gantry_provider_slots SET holder = $4, task_id = $5,"
    " lease_until = now() + $6::bigint * interval '1 millisecond'"
    " WHERE (provider, scope, slot) = (SELECT provider, scope, slot"
    "   FROM gantry_provider_slots WHERE provider = $1 AND scope = $2"
    "   AND slot < $3::int AND (holder IS NULL OR lease_until < now()"
    "        OR (holder = $4 AND task_id = $5))"
    "   ORDER BY (holder IS NOT DISTINCT FROM $4"
    "             AND task_id IS NOT DISTINCT FROM $5) DESC, slot"
    "   LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING slot";

static void gate_poll(gate_t *g)
{
    gt_slots_t *s = g->s;
    gt_slot_req_t *r = g->head;
    if (g->busy || g->waiting || !r || s->closing)
        return;
    if (!g->rows_ready && g->lim.max_in_flight > 0) {
        char n[16];
        snprintf(n, sizeof(n), "%d", g->lim.max_in_flight);
        const char *params[] = {g->provider, g->scope, n};
        /* Answered before the acquire below: one connection, in order. */
        gt_pg_query(s->pg,
                    "INSERT INTO gantry_provider_slots (provider, scope, slot)"
                    " SELECT $1, $2, g FROM generate_series(0, $3::int - 1) g"
                    " ON CONFLICT DO NOTHING",
                    3, params, on_ignore, "slot rows");
        g->rows_ready = 1;
    }
    int rc;
    if (r->phase == 0 && g->lim.max_in_flight > 0) {
        char n[16];
        snprintf(n, sizeof(n), "%d", g->lim.max_in_flight);
        const char *params[] = {g->provider, g->scope, n, s->holder, r->task_id, s->lease_ms};
        rc = gt_pg_query(s->pg, gt_slots_sql_acquire, 6, params, on_answer, r);
    } else {
        r->phase = 1;
        char rpm[24], tpm[24];
        snprintf(rpm, sizeof(rpm), "%" PRId64, g->lim.rpm ? g->lim.rpm : INT64_MAX);
        snprintf(tpm, sizeof(tpm), "%" PRId64, g->lim.tpm ? g->lim.tpm : INT64_MAX);
        const char *params[] = {g->provider, g->scope, rpm, tpm};
        rc = gt_pg_query(s->pg,
                         "INSERT INTO gantry_provider_windows AS w (provider, scope, minute,"
                         " requests, tokens) VALUES ($1, $2, date_trunc('minute', now()), 1, 0)"
                         " ON CONFLICT (provider, scope, minute) DO UPDATE"
                         " SET requests = w.requests + 1"
                         " WHERE w.requests < $3::bigint AND w.tokens < $4::bigint"
                         " RETURNING requests",
                         4, params, on_answer, r);
    }
    if (rc != 0) {
        g->waiting = 1;
        uv_timer_start(&g->timer, on_gate_timer, SLOT_ERROR_BACKOFF_MS, 0);
        return;
    }
    g->busy = 1;
    r->querying = 1;
}

/* A slot was freed here: the oldest waiter tries at once. */
static void gate_kick(gate_t *g)
{
    if (g->waiting && g->head) {
        uv_timer_stop(&g->timer);
        g->waiting = 0;
    }
    g->backoff = SLOT_BACKOFF_MIN_MS;
    gate_poll(g);
}

static void req_advance(gt_slot_req_t *r)
{
    if (r->stage < r->n_gates) {
        gate_push(r->gates[r->stage], r);
        gate_poll(r->gates[r->stage]);
        return;
    }
    r->cb(r, 0, NULL, r->arg);
}

/* ---- give-up sweep and lease renewal --------------------------------------- */

static void on_sweep(uv_timer_t *t)
{
    gt_slots_t *s = t->data;
    int64_t now = gt_clock_mono_ms();
    for (gate_t *g = s->gates; g; g = g->next) {
        for (gt_slot_req_t *r = g->head, *next; r; r = next) {
            next = r->next;
            if (r->give_up > now)
                continue;
            gate_unlink(g, r);
            req_drop_held(r);
            r->dead = 1;
            gt_slot_cb cb = r->cb;
            void *arg = r->arg;
            if (!r->querying)
                req_free(r);
            cb(r, -1, "timed out waiting for a provider slot", arg);
        }
    }
    if (s->waiting_total == 0)
        uv_timer_stop(&s->sweep);
}

static void on_renew(uv_timer_t *t)
{
    gt_slots_t *s = t->data;
    if (s->held > 0) {
        const char *params[] = {s->holder, s->lease_ms};
        gt_pg_query(s->pg,
                    "UPDATE gantry_provider_slots SET lease_until = now() + $2::bigint *"
                    " interval '1 millisecond' WHERE holder = $1",
                    2, params, on_ignore, "lease renewal");
    }
    static unsigned ticks;
    if (++ticks % 64 == 0)
        gt_pg_query(s->pg,
                    "DELETE FROM gantry_provider_windows WHERE minute < now() - interval '1 hour'",
                    0, NULL, on_ignore, "window cleanup");
}

/* ---- API ------------------------------------------------------------------- */

gt_slots_t *gt_slots_new(uv_loop_t *loop, const gt_config_t *cfg, const char *worker_id, char *err,
                         size_t errlen)
{
    int needed = 0;
    err[0] = '\0';
    for (size_t i = 0; i < cfg->n_providers && !needed; i++) {
        const gt_provider_t *p = &cfg->providers[i];
        needed = p->limits.max_in_flight || p->limits.rpm || p->limits.tpm;
        for (size_t t = 0; t < p->n_tenant_limits; t++) {
            const gt_provider_limits_t *l = &p->tenant_limits[t].limits;
            needed |= l->max_in_flight || l->rpm || l->tpm;
        }
    }
    if (!needed)
        return NULL;
    if (!cfg->pg_conninfo) {
        snprintf(err, errlen,
                 "postgres.conninfo: required when a provider has limits "
                 "(max_in_flight, rpm, tpm are shared through PostgreSQL)");
        return NULL;
    }
    gt_slots_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->cfg = cfg;
    /* Unique per process run: a restarted worker never renews its dead self's leases. */
    snprintf(s->holder, sizeof(s->holder), "%.200s/%ld/%" PRIx64, worker_id, (long)getpid(),
             (uint64_t)gt_clock_wall_ms());
    snprintf(s->lease_ms, sizeof(s->lease_ms), "%" PRId64, cfg->lease_ttl_ms);
    s->pg = gt_pg_new(loop, cfg->pg_conninfo);
    if (!s->pg) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    uv_timer_init(loop, &s->sweep);
    uv_timer_init(loop, &s->renew);
    uv_timer_init(loop, &s->closer);
    s->sweep.data = s->renew.data = s->closer.data = s;
    s->handles_open = 3;
    uint64_t every = (uint64_t)(cfg->lease_ttl_ms / 3 > 0 ? cfg->lease_ttl_ms / 3 : 1);
    uv_timer_start(&s->renew, on_renew, every, every);
    gt_info("provider limits are shared through PostgreSQL (holder %s)", s->holder);
    return s;
}

gt_slot_req_t *gt_slots_acquire(gt_slots_t *s, const gt_provider_t *p, const char *tenant,
                                const char *task_id, int64_t give_up_mono_ms, gt_slot_cb cb,
                                void *arg)
{
    gt_slot_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->s = s;
    r->cb = cb;
    r->arg = arg;
    r->give_up = give_up_mono_ms;
    r->held[0] = r->held[1] = -1;
    r->task_id = strdup(task_id ? task_id : "");
    const gt_provider_limits_t *tl = gt_provider_tenant_limits(p, tenant);
    /* The tenant's gate first, so a tenant's excess never sits on provider slots. */
    if (tl && (tl->max_in_flight || tl->rpm || tl->tpm))
        r->gates[r->n_gates++] = gate_get(s, p->name, tenant, tl);
    if (p->limits.max_in_flight || p->limits.rpm || p->limits.tpm)
        r->gates[r->n_gates++] = gate_get(s, p->name, "", &p->limits);
    for (int i = 0; i < r->n_gates; i++)
        if (!r->gates[i]) {
            req_free(r);
            return NULL;
        }
    if (!r->task_id) {
        req_free(r);
        return NULL;
    }
    if (!uv_is_active((uv_handle_t *)&s->sweep))
        uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    if (r->n_gates == 0) {
        /* Nothing to wait for; still answer from the loop, as promised. */
        r->stage = 0;
        gate_t *g = gate_get(s, p->name, "", &p->limits);
        if (!g) {
            req_free(r);
            return NULL;
        }
        r->gates[0] = g;
        r->n_gates = 1;
        r->phase = 1;
    }
    req_advance(r);
    return r;
}

void gt_slots_release(gt_slot_req_t *r, int64_t tokens)
{
    gt_slots_t *s = r->s;
    if (r->queued)
        gate_unlink(r->gates[r->stage], r);
    if (tokens > 0 && r->stage >= r->n_gates)
        for (int i = 0; i < r->n_gates; i++) {
            if (!r->gates[i]->lim.tpm)
                continue;
            char n[24];
            snprintf(n, sizeof(n), "%" PRId64, tokens);
            const char *params[] = {r->gates[i]->provider, r->gates[i]->scope, n};
            gt_pg_query(s->pg,
                        "INSERT INTO gantry_provider_windows AS w (provider, scope, minute,"
                        " requests, tokens) VALUES ($1, $2, date_trunc('minute', now()), 0,"
                        " $3::bigint) ON CONFLICT (provider, scope, minute) DO UPDATE"
                        " SET tokens = w.tokens + $3::bigint",
                        3, params, on_ignore, "tokens");
        }
    req_drop_held(r);
    r->dead = 1;
    r->cb = NULL;
    if (!r->querying)
        req_free(r);
}

int gt_slots_held(const gt_slots_t *s)
{
    return s ? s->held : 0;
}

static void on_closed(uv_handle_t *h)
{
    gt_slots_t *s = h->data;
    if (--s->handles_open == 0)
        free(s);
}

static void on_gate_closed(uv_handle_t *h)
{
    gate_t *g = h->data;
    gt_slots_t *s = g->s;
    free(g->provider);
    free(g->scope);
    free(g);
    if (--s->handles_open == 0)
        free(s);
}

static void finish_close(gt_slots_t *s)
{
    gt_pg_free(s->pg); /* answers what is left with "closed" */
    s->pg = NULL;
    for (gate_t *g = s->gates, *next; g; g = next) {
        next = g->next;
        uv_close((uv_handle_t *)&g->timer, on_gate_closed);
    }
    s->gates = NULL;
    uv_close((uv_handle_t *)&s->sweep, on_closed);
    uv_close((uv_handle_t *)&s->renew, on_closed);
    uv_close((uv_handle_t *)&s->closer, on_closed);
}

static void on_closer(uv_timer_t *t)
{
    gt_slots_t *s = t->data;
    if (gt_pg_pending(s->pg) > 0 && gt_clock_mono_ms() < s->close_until)
        return;
    uv_timer_stop(t);
    finish_close(s);
}

void gt_slots_free(gt_slots_t *s)
{
    if (!s || s->closing)
        return;
    s->closing = 1;
    uv_timer_stop(&s->sweep);
    uv_timer_stop(&s->renew);
    for (gate_t *g = s->gates; g; g = g->next) {
        uv_timer_stop(&g->timer);
        /* Waiters are dropped without callback; their owners are going too. */
        for (gt_slot_req_t *r = g->head, *next; r; r = next) {
            next = r->next;
            gate_unlink(g, r);
            r->dead = 1;
            if (!r->querying)
                req_free(r);
        }
    }
    /* Whatever this process still holds goes back now rather than at lease expiry. */
    if (s->held > 0) {
        const char *params[] = {s->holder};
        gt_pg_query(s->pg,
                    "UPDATE gantry_provider_slots SET holder = NULL, task_id = NULL,"
                    " lease_until = NULL WHERE holder = $1",
                    1, params, on_ignore, "release all");
    }
    s->close_until = gt_clock_mono_ms() + CLOSE_WAIT_MS;
    uv_timer_start(&s->closer, on_closer, 0, 10);
}
