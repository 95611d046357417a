/* obs.c — request ids, per-request statistics and server-wide event counters. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "obs/obs.h"

static _Thread_local uint64_t rng_state;

/* xorshift64*, seeded once per thread from getrandom. */
static uint64_t next_random(void)
{
    uint64_t x = rng_state;
    if (!x) {
        if (getrandom(&x, sizeof x, 0) != sizeof x)
            x = osv_now_ns() ^ (uint64_t)(uintptr_t)&rng_state;
        x |= 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static bool printable_id(const char *s, uint32_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    return true;
}

void osv_obs_request_begin(osv_conn_t *c)
{
    const osv_http_header_t *h = osv_req_header(c, "X-Request-ID");
    if (h && printable_id(h->value, h->value_len)) {
        memcpy(c->req.request_id, h->value, h->value_len);
        c->req.request_id_len = (uint8_t)h->value_len;
        return;
    }
    uint64_t a = next_random(), b = next_random();
    c->req.request_id_len = (uint8_t)snprintf(c->req.request_id, sizeof c->req.request_id, "%016llx%016llx",
                                              (unsigned long long)a, (unsigned long long)b);
}

osv_outcome_t osv_obs_outcome(int status)
{
    if (status < 400)
        return OSV_OUTCOME_SUCCESS;
    if (status == 503)
        return OSV_OUTCOME_REJECTED;
    if (status == 504)
        return OSV_OUTCOME_TIMEOUT;
    return status < 500 ? OSV_OUTCOME_INVALID : OSV_OUTCOME_ERROR;
}

void osv_obs_request_done(osv_conn_t *c)
{
    osv_request_t *q = &c->req;
    uint64_t total = osv_now_ns() - q->t_start;
    q->ns[OSV_PHASE_REQUEST] = total;
    q->outcome = osv_obs_outcome(c->res.status);
    if (!q->model || q->counted)
        return;
    osv_stats_t *st = osv_model_stats(q->model);
    q->counted = true;
    osv_stats_record_outcome(st, q->outcome, total);
    osv_stats_record_phase(st, OSV_PHASE_REQUEST, total);
    for (int p = OSV_PHASE_QUEUE; p < OSV_PHASE_COUNT; p++)
        if (q->ns[p])
            osv_stats_record_phase(st, (osv_phase_t)p, q->ns[p]);
    if (q->copied)
        osv_stats_record_copy(st, OSV_COPY_READAHEAD, q->copied);
}

void osv_obs_note_timeout(osv_server_t *s, const char *kind)
{
    int i = strcmp(kind, "header") == 0  ? 0
            : strcmp(kind, "body") == 0  ? 1
            : strcmp(kind, "write") == 0 ? 2
                                         : 3;
    atomic_fetch_add_explicit(&s->timeouts[i], 1, memory_order_relaxed);
}

void osv_obs_note_accept_error(osv_server_t *s, int err)
{
    (void)err;
    atomic_fetch_add_explicit(&s->accept_errors, 1, memory_order_relaxed);
}

void osv_obs_note_rejected_connection(osv_server_t *s)
{
    atomic_fetch_add_explicit(&s->rejected_connections, 1, memory_order_relaxed);
}
