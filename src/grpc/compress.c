/* compress.c — compressed request messages (grpc-encoding gzip or deflate, the message's compressed flag
 * set), as tritonclient.grpc sends them with compression_algorithm. Responses go uncompressed, which the
 * protocol allows whatever the client accepts.
 *
 * A compressed message is received, as it came, into a slot of its own length (the one copy out of the
 * read buffer), then inflated on a worker — milliseconds for a large tensor, never on a loop — with the
 * request layer's decoder (serve/inflate.h: bounded by --grpc-max-message-bytes, so a decompression bomb
 * gets RESOURCE_EXHAUSTED, not memory). An inference message is then split into its aligned slot as a
 * received one is (wire.h); any other message is unpacked where it was inflated. Both steps are copies
 * and are counted as such (reason "decompress"). The call is held while the worker has it, as during a
 * run: a reset stream only marks it, and the loop takes it back from the worker's post. */
#include <inttypes.h>
#include <stddef.h>
#include <string.h>

#include "grpc/grpc_internal.h"
#include "serve/inflate.h"

typedef struct zctx {
    gcall_t *k;
    osv_grpc_t *g;
    osv_loop_t *loop;
    int enc;
    bool split; /* an inference message: into an aligned slot */
    osv_stask_t task;
} zctx_t;

int grpc_encoding_of(const uint8_t *v, size_t n)
{
    if (n == 8 && memcmp(v, "identity", 8) == 0)
        return OSV_ENC_IDENTITY;
    if (n == 4 && memcmp(v, "gzip", 4) == 0)
        return OSV_ENC_GZIP;
    if (n == 7 && memcmp(v, "deflate", 7) == 0)
        return OSV_ENC_DEFLATE;
    return OSV_ENC_UNSUPPORTED;
}

/* The inflated message (in `out`, out_len bytes) split into its own slot: raw inputs aligned. */
static int split_inflated(zctx_t *x, osv_slot_t *out, uint64_t out_len)
{
    gcall_t *k = x->k;
    uint64_t cap = (out_len + OSV_GW_RAW_SLACK + 63) & ~63ull;
    int rc;
    if ((rc = osv_pool_acquire(x->g->pool, cap, &k->slot)) != 0)
        return osv_err_set(&k->err, rc, "no memory for a %" PRIu64 "-byte message, retry in %d ms", out_len,
                           GRPC_RETRY_MS);
    osv_gw_split_init(k->split, k->slot.base, cap, out_len);
    if ((rc = osv_gw_split_feed(k->split, out->base, out_len, &k->err)) != 0 ||
        (rc = osv_gw_split_end(k->split, &k->err)) != 0)
        return rc;
    k->decompressed += out_len;
    return 0;
}

/* Worker: the compressed message in k->slot becomes the plain one. */
static void inflate_run(osv_stask_t *t)
{
    zctx_t *x = t->ud;
    gcall_t *k = x->k;
    osv_slot_t out = {0};
    uint64_t out_len, moved;
    int rc = osv_inflate_body(x->g->pool, k->slot.base, k->msg_len, x->enc, x->g->o.max_message_bytes, &out,
                              &out_len, &moved, &k->err);
    if (rc) {
        if (rc == OSV_ETOOBIG)
            osv_err_prefix(&k->err, "grpc-encoding %s (--grpc-max-message-bytes)",
                           x->enc == OSV_ENC_GZIP ? "gzip" : "deflate");
        k->rc = rc;
        return;
    }
    k->decompressed = out_len + moved;
    osv_pool_release(x->g->pool, &k->slot); /* the compressed bytes */
    k->msg_len = out_len;
    if (!x->split) {
        k->slot = out;
        k->buf = (uint8_t *)out.base;
        return;
    }
    k->rc = split_inflated(x, &out, out_len);
    osv_pool_release(x->g->pool, &out);
}

static void inflate_posted(osv_post_t *p)
{
    gcall_t *k = (gcall_t *)((char *)p - offsetof(gcall_t, done));
    gconn_t *c = k->st->c;
    if (!grpc_call_back(k))
        return;
    grpc_dispatch(k);
    grpc_conn_settle(c);
}

/* Worker, after inflate_run: back to the connection's loop. */
static void inflate_complete(osv_stask_t *t)
{
    zctx_t *x = t->ud;
    x->k->done.fn = inflate_posted;
    osv_loop_post(x->loop, &x->k->done);
}

void grpc_inflate(gcall_t *k)
{
    gconn_t *c = k->st->c;
    gmethod_t m = k->st->method;
    zctx_t *x = osv_arena_alloc(&k->arena, sizeof *x, 8);
    bool split = m == GM_INFER || m == GM_STREAM_INFER;
    k->compressed = false; /* dispatched again once inflated */
    if (!x || (split && !(k->split = osv_arena_alloc(&k->arena, sizeof *k->split, 64)))) {
        k->rc = osv_err_set(&k->err, OSV_ENOMEM, "out of request memory");
        grpc_dispatch(k);
        return;
    }
    *x = (zctx_t){.k = k, .g = c->g, .loop = c->nc.loop, .enc = k->st->encoding, .split = split};
    x->task = (osv_stask_t){.run = inflate_run, .complete = inflate_complete, .ud = x};
    k->buf = NULL;
    k->held = true;
    c->n_held++;
    if (osv_serve_offload(c->g->serve, &x->task) != 0) {
        k->held = false;
        c->n_held--;
        k->rc = osv_err_set(&k->err, OSV_EBUSY, "too many messages wait to be decompressed, retry in %d ms",
                            GRPC_RETRY_MS);
        grpc_dispatch(k);
    }
}
