/* release.c - publishes the tasks waiting in PostgreSQL in lanes with slots:
 * gantry_release (migration 021) picks them under the lane's row lock, the
 * effect mechanism publishes them until durable, and only then are they marked
 * released (docs/scheduling.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "release.h"

typedef struct lane_state {
    struct gt_release *r;
    char *name;
    int slots;
    int running; /* a gantry_release statement is out */
    int again;   /* kicked while it was: run once more */
} lane_state_t;

struct gt_release {
    gt_dispatcher_t *d;
    gt_pg_t *pg;
    uv_timer_t timer;
    lane_state_t *lanes;
    int n_lanes;
    int batches; /* released tasks being published or marked */
    int closed;
    char by[200];  /* "<id>/<incarnation>": who claimed a release */
    char *weights; /* {tenant: weight} as JSON */
};

/* The tasks of one release, published as one effect, then marked. */
typedef struct batch {
    gt_release_t *r;
    json_t *ids;
} batch_t;

static const char sql_release[] =
    "SELECT o_task_id, o_request_id, o_message, o_traceparent, o_again"
    " FROM gantry_release($1, $2::int, $3::jsonb, $4, $5, $6::bigint)";

/* On Kafka: released. A task the start gate already marked running stays so. */
static const char sql_released[] =
    "UPDATE tasks SET hold = NULL,"
    "       status = CASE WHEN status = 'pending' THEN 'queued' ELSE status END,"
    "       queued_at = coalesce(queued_at, now())"
    " FROM json_array_elements_text($1::json) AS x(id)"
    " WHERE tasks.task_id = x.id AND tasks.hold = 'releasing'";

int gt_release_lane_slots(const gt_config_t *cfg, const char *lane)
{
    if (!lane)
        return 0;
    json_int_t v =
        json_integer_value(json_object_get(json_object_get(cfg->sched_lanes, lane), "slots"));
    return v > 0 ? (int)v : 0;
}

static void run(lane_state_t *l);

static void batch_free(batch_t *b)
{
    b->r->batches--;
    json_decref(b->ids);
    free(b);
}

static void on_marked(const PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    (void)res;
    if (err && strcmp(err, "closed") != 0) /* still counted in flight; published again later */
        gt_warn("marking %zu released task(s) failed: %s", json_array_size(b->ids), err);
    batch_free(b);
}

static void on_durable(void *arg)
{
    batch_t *b = arg;
    gt_release_t *r = b->r;
    char *ids = json_dumps(b->ids, JSON_COMPACT);
    const char *params[] = {ids};
    if (r->closed || !ids || gt_pg_query(r->pg, sql_released, 1, params, on_marked, b) != 0)
        batch_free(b); /* left 'releasing': published again after release_stale_ms */
    free(ids);
}

/* err 0: stopping; the tasks stay claimed and a later release (this --id
 * restarted, or any dispatcher after release_stale_ms) publishes them again.
 * Else a task cannot be produced at all: it stays claimed, retried as stale. */
static void on_failed(const char *topic, int err, const char *reason, void *arg)
{
    batch_t *b = arg;
    if (err)
        gt_error("releasing %zu task(s) to %s failed: %s; retried in %lld ms",
                 json_array_size(b->ids), topic, reason, (long long)b->r->d->cfg->release_stale_ms);
    batch_free(b);
}

static void publish(lane_state_t *l, const PGresult *res)
{
    gt_release_t *r = l->r;
    char topic[256];
    gt_config_lane_topic(r->d->cfg, l->name, topic, sizeof(topic));
    batch_t *b = calloc(1, sizeof(*b));
    if (!b || !(b->ids = json_array())) {
        free(b);
        gt_error("out of memory releasing tasks of lane %s: published after %lld ms", l->name,
                 (long long)r->d->cfg->release_stale_ms);
        return;
    }
    b->r = r;
    r->batches++;
    gt_effect_t *e = gt_effect_new(r->d->effects, on_durable, on_failed, b);
    if (!e) {
        batch_free(b);
        return;
    }
    int again = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *task_id = PQgetvalue(res, i, 0);
        again += strcmp(PQgetvalue(res, i, 4), "t") == 0;
        if (PQgetisnull(res, i, 2)) { /* stored before its lane had slots: never */
            gt_error("task %s waits without its message", task_id);
            continue;
        }
        const char *msg = PQgetvalue(res, i, 2);
        gt_header_t h = {"traceparent", PQgetvalue(res, i, 3)};
        int nh = PQgetisnull(res, i, 3) ? 0 : 1;
        json_array_append_new(b->ids, json_string(task_id));
        if (gt_effect_add(e, topic, task_id, strlen(task_id), msg, strlen(msg), &h, (size_t)nh) !=
            0) {
            gt_error("out of memory releasing tasks of lane %s: published after %lld ms", l->name,
                     (long long)r->d->cfg->release_stale_ms);
            gt_effect_abandon(e);
            batch_free(b);
            return;
        }
    }
    if (again) /* a second copy of one already on Kafka is skipped by the start gate */
        gt_info("lane %s: publishing again %d task(s) whose release was never confirmed", l->name,
                again);
    gt_debug("lane %s: released %zu task(s)", l->name, json_array_size(b->ids));
    gt_effect_seal(e);
}

static void on_release(const PGresult *res, const char *err, void *arg)
{
    lane_state_t *l = arg;
    l->running = 0;
    if (err) {
        if (strcmp(err, "closed") != 0) /* permanent: the poll tries again */
            gt_warn("releasing tasks of lane %s: %s", l->name, err);
        return;
    }
    if (PQntuples(res) > 0)
        publish(l, res);
    if (l->again)
        run(l);
}

static void run(lane_state_t *l)
{
    gt_release_t *r = l->r;
    if (r->closed)
        return;
    if (l->running) {
        l->again = 1;
        return;
    }
    l->again = 0;
    char slots[16], stale[24];
    snprintf(slots, sizeof(slots), "%d", l->slots);
    snprintf(stale, sizeof(stale), "%lld", (long long)r->d->cfg->release_stale_ms);
    const char *params[] = {l->name, slots, r->weights, r->by, r->d->id, stale};
    if (gt_pg_query(r->pg, sql_release, 6, params, on_release, l) == 0)
        l->running = 1;
}

void gt_release_kick(gt_release_t *r, const char *lane)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_lanes; i++)
        if (!lane || strcmp(lane, r->lanes[i].name) == 0)
            run(&r->lanes[i]);
}

static void on_tick(uv_timer_t *t)
{
    gt_release_t *r = t->data;
    if (gt_pg_connected(r->pg))
        gt_release_kick(r, NULL);
}

/* {tenant: weight} of the tenants given one. */
static char *weights_json(const gt_config_t *cfg)
{
    json_t *w = json_object();
    const char *name;
    json_t *v;
    json_object_foreach (cfg->sched_tenants, name, v) {
        json_t *weight = json_object_get(v, "weight");
        if (json_is_integer(weight))
            json_object_set_new(w, name, json_integer(json_integer_value(weight)));
    }
    char *text = w ? json_dumps(w, JSON_COMPACT) : NULL;
    json_decref(w);
    return text;
}

gt_release_t *gt_release_new(gt_dispatcher_t *d, int *oom)
{
    const gt_config_t *cfg = d->cfg;
    *oom = 0;
    size_t n = 0;
    const char *name;
    json_t *v;
    json_object_foreach (cfg->sched_lanes, name, v)
        n += gt_release_lane_slots(cfg, name) > 0;
    if (!n || !cfg->pg_conninfo)
        return NULL;
    gt_release_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->lanes = calloc(n, sizeof(*r->lanes))) || !(r->weights = weights_json(cfg)))
        goto oom;
    r->d = d;
    snprintf(r->by, sizeof(r->by), "%s/%s", d->id, d->incarnation);
    json_object_foreach (cfg->sched_lanes, name, v) {
        int slots = gt_release_lane_slots(cfg, name);
        if (!slots)
            continue;
        lane_state_t *l = &r->lanes[r->n_lanes];
        if (!(l->name = strdup(name)))
            goto oom;
        l->r = r;
        l->slots = slots;
        r->n_lanes++;
    }
    if (!(r->pg = gt_pg_new(d->loop, cfg->pg_conninfo)))
        goto oom;
    uv_timer_init(d->loop, &r->timer);
    r->timer.data = r;
    /* The first look soon after start: what a dead incarnation claimed waits
     * for no timeout. */
    uv_timer_start(&r->timer, on_tick, 100, (uint64_t)cfg->release_poll_ms);
    return r;
oom:
    *oom = 1;
    if (r) {
        for (int i = 0; i < r->n_lanes; i++)
            free(r->lanes[i].name);
        free(r->lanes);
        free(r->weights);
    }
    free(r);
    return NULL;
}

int gt_release_in_flight(const gt_release_t *r)
{
    if (!r)
        return 0;
    int n = r->batches;
    for (int i = 0; i < r->n_lanes; i++)
        n += r->lanes[i].running;
    return n;
}

void gt_release_close(gt_release_t *r)
{
    if (!r || r->closed)
        return;
    r->closed = 1;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
    gt_pg_free(r->pg);
    r->pg = NULL;
}

void gt_release_free(gt_release_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_lanes; i++)
        free(r->lanes[i].name);
    free(r->lanes);
    free(r->weights);
    free(r);
}
