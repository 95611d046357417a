/* classify.c — POST /v2/models/{m}[/versions/{v}]/classify[?top_k=K]: encoded images in, top-k
 * labels out, for models whose config.json has an "image" section.
 *
 *   body = the image bytes (Content-Type image/jpeg, image/png, application/octet-stream, curl's
 *          default application/x-www-form-urlencoded, or none)  -> [{"label","index","score"}, ...]
 *   body = multipart/form-data, one image per part              -> [[...], [...], ...] in part order
 *
 * The format is always sniffed from the bytes; the Content-Type only selects single vs multipart
 * and rejects what is plainly not an image (text, JSON, ...: 415). One request, as data:
 *   1. on the loop: model lookup, query and header checks, the body received into the connection
 *      buffer or one pool slot (osv_h_receive_body), multipart parts split in place (no copy);
 *   2. on a worker (decoding costs milliseconds, never the loop's time): osv_img_classify decodes
 *      every image straight into the input's pool slot, runs once per batch under the deadline
 *      watchdog, and ranks the scores where ORT wrote them;
 *   3. the JSON answer is built into a pool slot and written by the loop.
 * Statuses: 400 corrupt/truncated/empty, 413 too large (bytes, pixels, image count, or more decode
 * memory than the whole image decode budget), 415 not an image or not JPEG/PNG, 503 no memory, queue
 * full or the decode budget spent for now, 504 deadline. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/handlers.h"
#include "serve/errmap.h"
#include "ortserve/imaging.h"

#define MAX_TOP_K 1000

typedef struct part_name {
    const char *p;
    uint32_t n;
} part_name_t;

typedef struct cls_ctx {
    osv_model_t *m;
    const osv_img_model_t *im;
    osv_sreq_t sreq; /* the request as the request layer runs it */
    uint32_t failed; /* the image an error is about, or UINT32_MAX */
    uint32_t k, k_out;
    osv_img_times_t times;
    bool multi;
    const char *boundary;
    uint32_t boundary_len;
    uint32_t top_k; /* 0 = the model's default */
    osv_img_blob_t *blobs;
    part_name_t *names; /* multipart: each part's filename (or name) for messages */
    uint32_t n;
    osv_slot_t results; /* osv_img_class_t[n · k] */
    osv_err_t err;
} cls_ctx_t;

static void cls_cleanup(osv_conn_t *c)
{
    cls_ctx_t *x = c->req.ctx;
    if (x && x->results.base)
        osv_pool_release(c->srv->pool, &x->results);
    if (c->req.model)
        osv_model_release(c->req.model);
    c->req.model = NULL;
    c->req.ctx = NULL;
}

/* ---- request checks (loop thread) ---------------------------------------------------------------- */

static bool ieq(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(p, lit, n) == 0;
}

/* top_k=K; every other parameter is an error (a typo must not be silently ignored). */
static int parse_query(osv_conn_t *c, cls_ctx_t *x)
{
    const char *q = c->req.head.query, *end = q + c->req.head.query_len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q)), *e = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(e - q));
        size_t klen = (size_t)((eq ? eq : e) - q);
        if (klen == 5 && memcmp(q, "top_k", 5) == 0 && eq) {
            uint64_t v = 0;
            const char *d = eq + 1;
            for (; d < e && *d >= '0' && *d <= '9' && v <= MAX_TOP_K; d++)
                v = v * 10 + (uint64_t)(*d - '0');
            if (d != e || e == eq + 1 || v < 1 || v > MAX_TOP_K) {
                osv_res_error(c, 400, "top_k must be an integer from 1 to %d", MAX_TOP_K);
                return -1;
            }
            x->top_k = (uint32_t)v;
        } else if (klen) {
            osv_res_error(c, 400, "unknown query parameter '%.*s' (classify accepts top_k)",
                          (int)(klen > 64 ? 64 : klen), q);
            return -1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* Media type of a Content-Type value: [p, p + n) without parameters and blanks. */
static void media_type(const char *v, uint32_t len, const char **p, size_t *n)
{
    const char *semi = memchr(v, ';', len), *e = semi ? semi : v + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *p = v;
    *n = (size_t)(e - v);
}

/* The boundary parameter of a multipart Content-Type (quoted or not). */
static int find_boundary(const char *v, uint32_t len, const char **b, uint32_t *blen)
{
    const char *end = v + len;
    for (const char *p = v; p + 9 <= end; p++) {
        if (strncasecmp(p, "boundary=", 9) != 0 || (p > v && p[-1] != ';' && p[-1] != ' ' && p[-1] != '\t'))
            continue;
        const char *s = p + 9, *e;
        if (s < end && *s == '"') {
            s++;
            if (!(e = memchr(s, '"', (size_t)(end - s))))
                return -1;
        } else {
            for (e = s; e < end && *e != ';' && *e != ' ' && *e != '\t'; e++)
                ;
        }
        if (e == s || e - s > 70) /* RFC 2046: 1 to 70 characters */
            return -1;
        *b = s;
        *blen = (uint32_t)(e - s);
        return 0;
    }
    return -1;
}

/* Single image, multipart, or 415. */
static int content_type(osv_conn_t *c, cls_ctx_t *x)
{
    const osv_http_header_t *h = osv_req_header(c, "Content-Type");
    const char *t;
    size_t n;
    if (!h)
        return 0;
    media_type(h->value, h->value_len, &t, &n);
    if (ieq(t, n, "multipart/form-data")) {
        if (find_boundary(h->value, h->value_len, &x->boundary, &x->boundary_len) != 0) {
            osv_res_error(c, 400, "multipart/form-data needs a boundary parameter of 1 to 70 characters");
            return -1;
        }
        x->multi = true;
        return 0;
    }
    if ((n > 6 && strncasecmp(t, "image/", 6) == 0) || ieq(t, n, "application/octet-stream") ||
        ieq(t, n, "application/x-www-form-urlencoded") || n == 0)
        return 0;
    osv_res_error(c, 415,
                  "Content-Type '%.*s' is not an image: send the image bytes (image/jpeg, image/png or "
                  "application/octet-stream) or multipart/form-data with one image per part",
                  (int)(n > 64 ? 64 : n), t);
    return -1;
}

/* ---- multipart/form-data (RFC 7578), split in place ------------------------------------------------ */

typedef struct mp_part {
    const char *data;
    size_t len;
    const char *ctype, *name; /* spans in the part's headers, or NULL */
    uint32_t ctype_len, name_len;
} mp_part_t;

/* Value of parameter `key` (name / filename) in a Content-Disposition value. */
static void disposition_param(const char *v, size_t len, const char *key, const char **out, uint32_t *olen)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 1 < len; i++) {
        if ((i == 0 || v[i - 1] == ';' || v[i - 1] == ' ') && strncasecmp(v + i, key, kl) == 0 &&
            v[i + kl] == '=') {
            const char *s = v + i + kl + 1, *e = v + len;
            if (s < e && *s == '"') {
                s++;
                const char *q = memchr(s, '"', (size_t)(e - s));
                e = q ? q : e;
            } else {
                const char *q = memchr(s, ';', (size_t)(e - s));
                e = q ? q : e;
            }
            *out = s;
            *olen = (uint32_t)(e - s > 200 ? 200 : e - s);
            return;
        }
    }
}

/* Next part after position *pos (just past a delimiter line). Returns 1 with *p, 0 at the closing
 * delimiter, -1 with *why on malformed input. */
static int mp_next(const char *body, size_t len, const char *delim, size_t dlen, size_t *pos, mp_part_t *p,
                   const char **why)
{
    size_t i = *pos;
    memset(p, 0, sizeof *p);
    if (i + 2 <= len && body[i] == '-' && body[i + 1] == '-')
        return 0;                                          /* "--boundary--": the end */
    while (i < len && (body[i] == ' ' || body[i] == '\t')) /* transport padding */
        i++;
    if (i + 2 > len || body[i] != '\r' || body[i + 1] != '\n')
        return (*why = "a delimiter line does not end with CRLF"), -1;
    i += 2;
    /* headers, up to an empty line */
    for (;;) {
        const char *eol = memmem(body + i, len - i, "\r\n", 2);
        if (!eol)
            return (*why = "a part's headers are not terminated"), -1;
        size_t l = (size_t)(eol - (body + i));
        const char *line = body + i;
        i += l + 2;
        if (l == 0)
            break;
        const char *colon = memchr(line, ':', l);
        if (!colon)
            return (*why = "a part header has no ':'"), -1;
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1, *ve = line + l;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        if (ieq(line, nl, "Content-Type")) {
            p->ctype = v;
            p->ctype_len = (uint32_t)(ve - v);
        } else if (ieq(line, nl, "Content-Disposition")) {
            disposition_param(v, (size_t)(ve - v), "name", &p->name, &p->name_len);
            disposition_param(v, (size_t)(ve - v), "filename", &p->name, &p->name_len);
        }
    }
    /* data, up to CRLF + delimiter */
    const char *end = NULL;
    for (size_t j = i; j + 2 + dlen <= len;) {
        const char *cr = memmem(body + j, len - j, "\r\n", 2);
        if (!cr || (size_t)(cr - body) + 2 + dlen > len)
            break;
        if (memcmp(cr + 2, delim, dlen) == 0) {
            end = cr;
            break;
        }
        j = (size_t)(cr - body) + 1;
    }
    if (!end)
        return (*why = "a part is not followed by a delimiter (truncated body?)"), -1;
    p->data = body + i;
    p->len = (size_t)(end - (body + i));
    *pos = (size_t)(end - body) + 2 + dlen;
    return 1;
}

/* Counts the parts (pass 1) or stores them (pass 2, blobs != NULL). Answers the error itself. */
static int mp_split(osv_conn_t *c, cls_ctx_t *x, const char *delim, size_t dlen, uint32_t *count)
{
    const char *body = c->req.body_ptr, *why = NULL, *first;
    size_t len = c->req.body_len, pos;
    mp_part_t p;
    uint32_t n = 0;
    int r;
    /* The first delimiter: at the very start or after a preamble line. */
    if (len >= dlen && memcmp(body, delim, dlen) == 0)
        first = body;
    else if ((first = memmem(body, len, delim - 2, dlen + 2)))
        first += 2;
    if (!first) {
        osv_res_error(c, 400, "malformed multipart body: no delimiter '--%.*s' found", (int)x->boundary_len,
                      x->boundary);
        return -1;
    }
    pos = (size_t)(first - body) + dlen;
    while ((r = mp_next(body, len, delim, dlen, &pos, &p, &why)) == 1) {
        const char *t;
        size_t tn;
        if (x->blobs) {
            x->blobs[n] = (osv_img_blob_t){p.data, p.len};
            x->names[n] = (part_name_t){p.name, p.name_len};
        } else {
            if (p.ctype) {
                media_type(p.ctype, p.ctype_len, &t, &tn);
                if (!(tn > 6 && strncasecmp(t, "image/", 6) == 0) &&
                    !ieq(t, tn, "application/octet-stream")) {
                    osv_res_error(c, 415,
                                  "part %u ('%.*s') has Content-Type '%.*s': every part must be an image", n,
                                  (int)p.name_len, p.name ? p.name : "", (int)(tn > 64 ? 64 : tn), t);
                    return -1;
                }
            }
            if (p.len == 0) {
                osv_res_error(c, 400, "part %u ('%.*s') is empty: every part must hold an image", n,
                              (int)p.name_len, p.name ? p.name : "");
                return -1;
            }
            if (p.len > x->im->spec.limits.max_bytes) {
                osv_res_error(c, 413,
                              "part %u ('%.*s'): image of %zu bytes exceeds the limit of %" PRIu64
                              " bytes (max_bytes)",
                              n, (int)p.name_len, p.name ? p.name : "", p.len, x->im->spec.limits.max_bytes);
                return -1;
            }
        }
        if (++n > x->im->spec.limits.max_images) {
            osv_res_error(c, 413, "too many images in one request: the limit is %u (max_images)",
                          x->im->spec.limits.max_images);
            return -1;
        }
    }
    if (r < 0) {
        osv_res_error(c, 400, "malformed multipart body: %s", why);
        return -1;
    }
    if (n == 0) {
        osv_res_error(c, 400, "the multipart body has no parts: send one image per part");
        return -1;
    }
    *count = n;
    return 0;
}

/* ---- running (a worker of the request layer) ---------------------------------------------------- */

static void watch(void *ud, osv_infer_t *inf, bool begin)
{
    osv_conn_t *c = ud;
    cls_ctx_t *x = c->req.ctx;
    if (begin)
        osv_serve_watch_begin(c->srv->serve, &x->sreq, inf);
    else
        osv_serve_watch_end(c->srv->serve);
}

/* An image's error names the multipart part it came from; a request-wide one stands alone. */
static void answer_error(osv_conn_t *c, cls_ctx_t *x, int rc, uint32_t failed)
{
    const char *msg = x->sreq.err.msg;
    if (x->multi && failed < x->n)
        osv_res_error(c, osv_status_http(rc), "part %u ('%.*s'): %s", failed, (int)x->names[failed].n,
                      x->names[failed].p ? x->names[failed].p : "", msg);
    else
        osv_res_error(c, osv_status_http(rc), "%s", msg);
}

static void write_row(osv_jw_t *w, const osv_img_class_t *r, uint32_t k)
{
    osv_jw_arr_begin(w);
    for (uint32_t j = 0; j < k; j++) {
        osv_jw_obj_begin(w);
        osv_jw_key(w, "label", 5);
        if (r[j].label)
            osv_jw_str(w, r[j].label, strlen(r[j].label));
        else
            osv_jw_null(w);
        osv_jw_key(w, "index", 5);
        osv_jw_u64(w, r[j].index);
        osv_jw_key(w, "score", 5);
        osv_jw_f32(w, r[j].score);
        osv_jw_obj_end(w);
    }
    osv_jw_arr_end(w);
}

static void answer(osv_conn_t *c, cls_ctx_t *x, const osv_img_class_t *res, uint32_t kstride, uint32_t k)
{
    uint64_t cap = 16;
    osv_jw_t w;
    for (uint32_t i = 0; i < x->n; i++)
        for (uint32_t j = 0; j < k; j++) {
            const char *l = res[(size_t)i * kstride + j].label;
            cap += 48 + OSV_JW_MAX_F32_CHARS + OSV_JW_MAX_U64_CHARS + (l ? osv_jw_str_max(strlen(l)) : 4);
        }
    char *buf = osv_res_body_buf(c, cap + 4 * (uint64_t)x->n);
    if (!buf) {
        osv_res_error(c, 503, "no memory for the response, retry later");
        return;
    }
    osv_jw_init(&w, buf, cap + 4 * (uint64_t)x->n);
    if (x->multi)
        osv_jw_arr_begin(&w);
    for (uint32_t i = 0; i < x->n; i++)
        write_row(&w, res + (size_t)i * kstride, k);
    if (x->multi)
        osv_jw_arr_end(&w);
    if (osv_jw_error(&w)) {
        osv_res_error(c, 500, "response did not fit its buffer");
        return;
    }
    osv_res_json(c, 200, buf, osv_jw_len(&w));
}

/* The request layer's execute step: decodes every image straight into the input and runs the model
 * in batches, under the watchdog. */
static int classify(osv_sreq_t *r)
{
    osv_conn_t *c = r->ud;
    cls_ctx_t *x = c->req.ctx;
    osv_server_t *s = c->srv;
    osv_img_ctx_t *ictx;
    x->failed = UINT32_MAX;
    if (!(ictx = osv_img_thread_ctx(&r->err)))
        return r->err.code ? r->err.code : OSV_ENOMEM;
    osv_img_ctx_set_budget(ictx, s->img_budget);
    if (osv_pool_acquire(s->pool, (uint64_t)x->n * x->k * sizeof(osv_img_class_t), &x->results) != 0)
        return osv_err_set(&r->err, OSV_EBUSY, "no memory for %u x %u results, retry later", x->n, x->k);
    osv_img_classify_opts_t o = {.pool = s->pool, .top_k = x->k, .on_run = watch, .ud = c, .times = &x->times};
    int rc = osv_img_classify(ictx, x->m, x->blobs, x->n, &o, (osv_img_class_t *)x->results.base, &x->k_out,
                              &x->failed, &r->err);
    r->ns[OSV_PHASE_COMPUTE_INPUT] = x->times.preprocess_ns;
    r->ns[OSV_PHASE_COMPUTE_INFER] = x->times.runs ? x->times.run_ns / x->times.runs : 0; /* per run */
    r->batch = x->n;
    return rc;
}

static void finish(osv_conn_t *c)
{
    cls_ctx_t *x = c->req.ctx;
    osv_sreq_t *r = &x->sreq;
    c->req.ns[OSV_PHASE_QUEUE] = r->ns[OSV_PHASE_QUEUE];
    c->req.ns[OSV_PHASE_COMPUTE_INPUT] = x->times.preprocess_ns;
    c->req.ns[OSV_PHASE_COMPUTE_INFER] = x->times.run_ns;
    c->req.ns[OSV_PHASE_COMPUTE_OUTPUT] = x->times.post_ns;
    c->req.phase_t0[OSV_PHASE_QUEUE] = r->phase_t0[OSV_PHASE_QUEUE];
    c->req.phase_t1[OSV_PHASE_QUEUE] = r->phase_t1[OSV_PHASE_QUEUE];
    c->req.batch = x->n;
    if (r->rc) {
        answer_error(c, x, r->rc, x->failed);
        return;
    }
    answer(c, x, (osv_img_class_t *)x->results.base, x->k, x->k_out);
}

/* A worker finished the request: the response is encoded here, written by the connection's loop. */
static void completed(osv_sreq_t *r)
{
    finish(r->ud);
    osv_conn_complete(r->ud);
}

/* ---- entry (loop thread) ------------------------------------------------------------------------------ */

static void body_received(osv_conn_t *c)
{
    cls_ctx_t *x = c->req.ctx;
    osv_server_t *s = c->srv;
    if (x->multi) {
        size_t dlen = 2 + (size_t)x->boundary_len;
        char *delim = osv_arena_alloc(&c->nc.arena, dlen + 3, 1); /* "\r\n--" + boundary */
        uint32_t n = 0;
        if (!delim) {
            osv_res_error(c, 503, "out of request memory");
            return;
        }
        memcpy(delim, "\r\n--", 4);
        memcpy(delim + 4, x->boundary, x->boundary_len);
        if (mp_split(c, x, delim + 2, dlen, &n) != 0)
            return;
        x->blobs = osv_arena_alloc(&c->nc.arena, n * sizeof *x->blobs, 8);
        x->names = osv_arena_alloc(&c->nc.arena, n * sizeof *x->names, 8);
        if (!x->blobs || !x->names) {
            osv_res_error(c, 503, "out of request memory");
            return;
        }
        mp_split(c, x, delim + 2, dlen, &x->n);
    } else {
        if (!(x->blobs = osv_arena_alloc(&c->nc.arena, sizeof *x->blobs, 8))) {
            osv_res_error(c, 503, "out of request memory");
            return;
        }
        x->blobs[0] = (osv_img_blob_t){c->req.body_ptr, c->req.body_len};
        x->n = 1;
    }
    if (osv_server_memory_refuse(c))
        return;
    x->k = x->top_k ? x->top_k : x->im->post.top_k;
    if (x->im->classes && x->k > x->im->classes)
        x->k = x->im->classes; /* no room for results that cannot exist */
    /* decoding takes milliseconds: always on a worker, never inline on the loop */
    x->sreq = (osv_sreq_t){.model = x->m,
                           .deadline = c->req.deadline,
                           .deadline_ms = c->req.deadline_ms,
                           .deadline_src = c->req.deadline_src,
                           .execute = classify,
                           .complete = completed,
                           .ud = c};
    int rc = osv_serve_submit(s->serve, &x->sreq);
    if (rc == 1)
        finish(c);
    else
        osv_http_refuse_queued(c, rc, &x->sreq.err);
}

void osv_h_classify(osv_conn_t *c, const osv_route_t *r)
{
    osv_server_t *s = c->srv;
    osv_model_t *m = osv_h_model(c, r);
    cls_ctx_t *x;
    uint64_t cl = c->req.head.content_length, limit;
    if (!m)
        return;
    c->req.model = m;
    c->req.cleanup = cls_cleanup;
    if (!(x = osv_arena_alloc(&c->nc.arena, sizeof *x, 8))) {
        osv_res_error(c, 503, "out of request memory");
        return;
    }
    memset(x, 0, sizeof *x);
    x->m = m;
    c->req.ctx = x;
    if (!(x->im = osv_img_model(m))) {
        osv_res_error(c, 400,
                      "model '%s' has no \"image\" section in its config.json: classify needs one (see "
                      "docs/DESIGN.md, \"Imaging\")",
                      osv_model_name(m));
        return;
    }
    if (parse_query(c, x) != 0 || content_type(c, x) != 0)
        return;
    if (osv_h_deadline(c, m) != 0)
        return;
    if (!c->req.head.chunked && cl == 0) {
        osv_res_error(c, 400, "empty body: POST the encoded image (JPEG or PNG), or multipart/form-data");
        return;
    }
    limit = s->o.max_body_bytes;
    if (!x->multi && x->im->spec.limits.max_bytes < limit) {
        limit = x->im->spec.limits.max_bytes;
        if (cl > limit) {
            osv_res_error(c, 413,
                          "image of %" PRIu64 " bytes exceeds the limit of %" PRIu64 " bytes (max_bytes)", cl,
                          limit);
            return;
        }
    }
    osv_h_receive_body(c, limit, body_received);
}
