/* cache.c — the response cache: a bounded LRU of whole successful responses, keyed by model version,
 * requested outputs and input bytes (cache.h). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "obs/log.h"
#include "serve/cache.h"

/* Test hook, never for production: with this variable set to 1 every key hashes alike, so the end-to-end
 * tests can show that the full comparison alone keeps colliding inputs apart (a lookup then finds the
 * one cached entry of the model version for any input, compares, and answers only its own input from
 * it). Logged as a warning at start. */
#define TEST_COLLISIONS_ENV "ORTSERVE_TEST_CACHE_COLLISIONS"

#define ALIGN16(x) (((x) + 15u) & ~(uint64_t)15u)
#define MAX_OUTPUTS 64 /* a request with more outputs is neither looked up nor kept */

/* One input of a key: what it was sent as, and where its bytes are in the entry. */
typedef struct in_key {
    uint32_t idx;
    osv_dtype_t dtype;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS];
    uint64_t bytes, off;
} in_key_t;

/* One output of a response (BYTES in Triton's serialized form). */
typedef struct out_rec {
    uint32_t idx;
    osv_dtype_t dtype;
    uint32_t rank;
    int64_t dims[OSV_MAX_DIMS];
    uint64_t count, bytes, off;
} out_rec_t;

/* One response: a single heap block (header, keys, then the bytes at 16-byte-aligned offsets). */
typedef struct entry {
    osv_cache_t *cache;
    uint64_t hash[2], uid;
    struct entry *hnext, *prev, *next; /* hash chain, LRU list (head = most recent) */
    uint32_t pins;                     /* requests viewing its outputs (under lock) */
    bool dead;                         /* evicted while pinned: the last unpin frees it */
    uint64_t size;
    uint32_t n_in, n_out;
    in_key_t *in;
    out_rec_t *out;
    uint8_t *data;
} entry_t;

struct osv_cache {
    pthread_mutex_t lock;
    uint64_t key[2]; /* SipHash key, random per process */
    bool collide;    /* TEST_COLLISIONS_ENV: every hash is the same */
    entry_t **buckets;
    uint64_t mask;
    entry_t *head, *tail;
    osv_cache_stats_t st; /* under lock */
};

/* ---- SipHash-2-4 with a 128-bit result (Aumasson and Bernstein), fed incrementally ------------------- */

typedef struct sip {
    uint64_t v0, v1, v2, v3, tail, len;
} sip_t;

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(sip_t *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13) ^ s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16) ^ s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21) ^ s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17) ^ s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static void sip_word(sip_t *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

static void sip_init(sip_t *s, const uint64_t k[2])
{
    s->v0 = 0x736f6d6570736575ull ^ k[0];
    s->v1 = 0x646f72616e646f6dull ^ k[1] ^ 0xee;
    s->v2 = 0x6c7967656e657261ull ^ k[0];
    s->v3 = 0x7465646279746573ull ^ k[1];
    s->tail = s->len = 0;
}

static void sip_update(sip_t *s, const void *data, uint64_t n)
{
    const uint8_t *p = data;
    while (n && (s->len & 7)) { /* finish a partial word */
        s->tail |= (uint64_t)*p++ << (8 * (s->len & 7));
        s->len++;
        n--;
        if (!(s->len & 7)) {
            sip_word(s, s->tail);
            s->tail = 0;
        }
    }
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t m;
        memcpy(&m, p, 8); /* little-endian hosts (as the wire formats assume) */
        sip_word(s, m);
        s->len += 8;
    }
    for (; n; n--, s->len++)
        s->tail |= (uint64_t)*p++ << (8 * (s->len & 7));
}

static void sip_final(sip_t *s, uint64_t out[2])
{
    sip_word(s, s->tail | (s->len << 56));
    s->v2 ^= 0xee;
    for (int i = 0; i < 4; i++)
        sip_round(s);
    out[0] = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    s->v1 ^= 0xdd;
    for (int i = 0; i < 4; i++)
        sip_round(s);
    out[1] = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* ---- keys ------------------------------------------------------------------------------------------------ */

static uint64_t model_uid(const osv_sreq_t *r)
{
    return ((const mstate_t *)r->ms)->uid;
}

/* The key's hash: model version (its load), the requested outputs in order, every input as sent. */
static bool hash_request(const osv_cache_t *c, const osv_sreq_t *r, uint64_t out[2])
{
    uint32_t n_in = osv_model_input_count(r->model), n_out = osv_infer_output_count(r->inf);
    uint64_t uid = model_uid(r);
    sip_t s;
    if (n_out > MAX_OUTPUTS)
        return false;
    sip_init(&s, c->key);
    sip_update(&s, &uid, sizeof uid);
    sip_update(&s, &n_out, sizeof n_out);
    for (uint32_t k = 0; k < n_out; k++) {
        uint32_t idx = osv_infer_output_index(r->inf, k);
        sip_update(&s, &idx, sizeof idx);
    }
    for (uint32_t i = 0; i < n_in; i++) {
        osv_infer_input_info_t a;
        uint32_t dt;
        if (osv_infer_input_info(r->inf, i, &a) != 0)
            return false;
        dt = (uint32_t)a.dtype;
        sip_update(&s, &dt, sizeof dt);
        sip_update(&s, &a.rank, sizeof a.rank);
        sip_update(&s, a.dims, a.rank * sizeof *a.dims);
        sip_update(&s, &a.bytes, sizeof a.bytes);
        sip_update(&s, a.data, a.bytes);
    }
    sip_final(&s, out);
    if (c->collide)
        out[0] = out[1] = 0;
    return true;
}

/* The full comparison behind a matching hash. */
static bool same_request(const entry_t *e, const osv_sreq_t *r)
{
    uint32_t n_in = osv_model_input_count(r->model), n_out = osv_infer_output_count(r->inf);
    if (e->uid != model_uid(r) || e->n_in != n_in || e->n_out != n_out)
        return false;
    for (uint32_t k = 0; k < n_out; k++)
        if (e->out[k].idx != osv_infer_output_index(r->inf, k))
            return false;
    for (uint32_t i = 0; i < n_in; i++) {
        const in_key_t *k = &e->in[i];
        osv_infer_input_info_t a;
        if (osv_infer_input_info(r->inf, i, &a) != 0 || k->dtype != a.dtype || k->rank != a.rank ||
            k->bytes != a.bytes || memcmp(k->dims, a.dims, a.rank * sizeof *a.dims) != 0 ||
            (a.bytes && memcmp(e->data + k->off, a.data, a.bytes) != 0))
            return false;
    }
    return true;
}

/* ---- the table and the LRU (under lock) ------------------------------------------------------------------ */

static entry_t **bucket(osv_cache_t *c, const uint64_t h[2])
{
    return &c->buckets[h[0] & c->mask];
}

static void lru_unlink(osv_cache_t *c, entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(osv_cache_t *c, entry_t *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* Takes e out of the table and the LRU; returns true when it can be freed now (nobody views it). */
static bool evict(osv_cache_t *c, entry_t *e)
{
    for (entry_t **p = bucket(c, e->hash); *p; p = &(*p)->hnext) {
        if (*p == e) {
            *p = e->hnext;
            break;
        }
    }
    lru_unlink(c, e);
    c->st.entries--;
    c->st.evictions++;
    if (e->pins) {
        e->dead = true; /* still counted in bytes until the last request lets go */
        return false;
    }
    c->st.bytes -= e->size;
    return true;
}

static entry_t *find(osv_cache_t *c, const uint64_t h[2], uint64_t uid)
{
    for (entry_t *e = *bucket(c, h); e; e = e->hnext)
        if (e->hash[0] == h[0] && e->hash[1] == h[1] && e->uid == uid)
            return e;
    return NULL;
}

static void unpin(void *ud)
{
    entry_t *e = ud;
    osv_cache_t *c = e->cache;
    bool free_it;
    pthread_mutex_lock(&c->lock);
    free_it = --e->pins == 0 && e->dead;
    if (free_it)
        c->st.bytes -= e->size;
    pthread_mutex_unlock(&c->lock);
    if (free_it)
        osv_free(e);
}

/* ---- lookup and insert ------------------------------------------------------------------------------------- */

/* r's outputs become views of e's. */
static int answer(entry_t *e, osv_sreq_t *r)
{
    osv_tensor_view_t v[MAX_OUTPUTS];
    for (uint32_t k = 0; k < e->n_out; k++) {
        const out_rec_t *o = &e->out[k];
        v[k] = (osv_tensor_view_t){.name = osv_model_output(r->model, o->idx)->name,
                                   .dtype = o->dtype,
                                   .rank = o->rank,
                                   .count = o->count,
                                   .data = e->data + o->off,
                                   .bytes = o->bytes,
                                   .binding = OSV_COPY_NONE};
        memcpy(v[k].dims, o->dims, o->rank * sizeof *o->dims);
    }
    return osv_infer_adopt_views(r->inf, v, e->n_out, unpin, e, &r->err);
}

int osv_cache_lookup(osv_cache_t *c, osv_sreq_t *r)
{
    uint64_t t0 = osv_now_ns(), h[2];
    osv_stats_t *st = osv_model_stats(r->model);
    entry_t *e;
    if (!c || !hash_request(c, r, h))
        return 0;
    pthread_mutex_lock(&c->lock);
    if ((e = find(c, h, model_uid(r))) != NULL) {
        e->pins++;
        lru_unlink(c, e);
        lru_front(c, e);
    }
    pthread_mutex_unlock(&c->lock);
    if (e && same_request(e, r)) {
        r->rc = answer(e, r); /* the infer releases the pin when it is finished, whatever the outcome */
        if (r->rc == 0) {
            r->cache_hit = true;
            r->batch = osv_infer_batch(r->inf);
            pthread_mutex_lock(&c->lock);
            c->st.hits++;
            pthread_mutex_unlock(&c->lock);
            osv_stats_record_cache(st, true, osv_now_ns() - t0);
        }
        return 1;
    }
    if (e)
        unpin(e); /* a hash collision: never another input's answer */
    memcpy(r->cache_hash, h, sizeof h);
    r->cache_keyed = true;
    pthread_mutex_lock(&c->lock);
    c->st.misses++;
    pthread_mutex_unlock(&c->lock);
    osv_stats_record_cache(st, false, osv_now_ns() - t0);
    return 0;
}

/* Sizes an entry for r: header, keys and the 16-byte-aligned bytes of every input and output. */
static bool entry_size(const osv_sreq_t *r, osv_tensor_view_t *v, uint64_t *size)
{
    uint32_t n_in = osv_model_input_count(r->model), n_out = osv_infer_output_count(r->inf);
    uint64_t total = ALIGN16(sizeof(entry_t)) + ALIGN16(n_in * sizeof(in_key_t)) + ALIGN16(n_out * sizeof(out_rec_t));
    for (uint32_t i = 0; i < n_in; i++) {
        osv_infer_input_info_t a;
        if (osv_infer_input_info(r->inf, i, &a) != 0 || a.bytes > UINT64_MAX / 4)
            return false;
        total += ALIGN16(a.bytes);
    }
    for (uint32_t k = 0; k < n_out; k++) {
        if (osv_infer_output_view(r->inf, k, &v[k], NULL) != 0 || v[k].bytes > UINT64_MAX / 4 ||
            (v[k].dtype != OSV_DTYPE_BYTES && !v[k].data && v[k].bytes))
            return false;
        total += ALIGN16(v[k].bytes);
    }
    *size = total;
    return total < UINT64_MAX / 4;
}

/* Copies r's key and response into e (sized by entry_size). */
static bool fill(entry_t *e, osv_sreq_t *r, const osv_tensor_view_t *v, uint64_t size)
{
    uint32_t n_in = osv_model_input_count(r->model), n_out = osv_infer_output_count(r->inf);
    uint8_t *base = (uint8_t *)e;
    uint64_t off;
    e->size = size;
    e->n_in = n_in;
    e->n_out = n_out;
    e->in = (in_key_t *)(base + ALIGN16(sizeof *e));
    e->out = (out_rec_t *)((uint8_t *)e->in + ALIGN16(n_in * sizeof(in_key_t)));
    e->data = (uint8_t *)e->out + ALIGN16(n_out * sizeof(out_rec_t));
    off = 0;
    for (uint32_t i = 0; i < n_in; i++) {
        osv_infer_input_info_t a;
        osv_infer_input_info(r->inf, i, &a);
        e->in[i] = (in_key_t){.idx = i, .dtype = a.dtype, .rank = a.rank, .bytes = a.bytes, .off = off};
        memcpy(e->in[i].dims, a.dims, a.rank * sizeof *a.dims);
        if (a.bytes)
            memcpy(e->data + off, a.data, a.bytes);
        off += ALIGN16(a.bytes);
    }
    for (uint32_t k = 0; k < n_out; k++) {
        out_rec_t *o = &e->out[k];
        *o = (out_rec_t){.idx = osv_infer_output_index(r->inf, k), .dtype = v[k].dtype, .rank = v[k].rank,
                         .count = v[k].count, .bytes = v[k].bytes, .off = off};
        memcpy(o->dims, v[k].dims, v[k].rank * sizeof *v[k].dims);
        if (v[k].dtype == OSV_DTYPE_BYTES) {
            if (osv_infer_output_bytes(r->inf, k, e->data + off, v[k].bytes, NULL) != 0)
                return false;
        } else if (v[k].bytes) {
            memcpy(e->data + off, v[k].data, v[k].bytes);
        }
        off += ALIGN16(v[k].bytes);
    }
    osv_infer_note_copy(r->inf, OSV_COPY_CACHE, off);
    return true;
}

void osv_cache_insert(osv_cache_t *c, osv_sreq_t *r)
{
    osv_tensor_view_t v[MAX_OUTPUTS];
    entry_t *e, *victims = NULL;
    uint64_t size;
    if (!c || !r->cache_keyed)
        return;
    r->cache_keyed = false;
    if (osv_infer_output_count(r->inf) > MAX_OUTPUTS || !entry_size(r, v, &size))
        return;
    if (size > c->st.budget) {
        pthread_mutex_lock(&c->lock);
        c->st.too_large++;
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (!(e = osv_malloc(size)))
        return;
    memset(e, 0, sizeof *e);
    e->cache = c;
    memcpy(e->hash, r->cache_hash, sizeof e->hash);
    e->uid = model_uid(r);
    if (!fill(e, r, v, size)) {
        osv_free(e);
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (find(c, e->hash, e->uid)) { /* the same request ran twice at once: one entry is enough */
        pthread_mutex_unlock(&c->lock);
        osv_free(e);
        return;
    }
    while (c->st.bytes + size > c->st.budget && c->tail) {
        entry_t *old = c->tail;
        if (evict(c, old)) {
            old->next = victims; /* freed outside the lock */
            victims = old;
        }
    }
    if (c->st.bytes + size > c->st.budget) { /* pinned entries hold the rest for now */
        c->st.too_large++;
        pthread_mutex_unlock(&c->lock);
        osv_free(e);
    } else {
        e->hnext = *bucket(c, e->hash);
        *bucket(c, e->hash) = e;
        lru_front(c, e);
        c->st.bytes += size;
        c->st.entries++;
        c->st.inserts++;
        pthread_mutex_unlock(&c->lock);
    }
    while (victims) {
        entry_t *n = victims->next;
        osv_free(victims);
        victims = n;
    }
}

/* ---- create, destroy, statistics ---------------------------------------------------------------------------- */

int osv_cache_create(uint64_t budget, osv_cache_t **out, osv_err_t *err)
{
    osv_cache_t *c = osv_calloc(1, sizeof *c);
    uint64_t nb = 256;
    if (!c)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    while (nb < 65536 && nb * 16384 < budget) /* about a bucket per 16 KiB of budget */
        nb *= 2;
    if (!(c->buckets = osv_calloc(nb, sizeof *c->buckets))) {
        osv_free(c);
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    }
    c->mask = nb - 1;
    c->st.budget = budget;
    if (getrandom(c->key, sizeof c->key, 0) != (ssize_t)sizeof c->key) { /* no entropy: still keyed */
        c->key[0] = osv_now_ns() ^ (uint64_t)(uintptr_t)c;
        c->key[1] = (uint64_t)(uintptr_t)&c ^ 0x9e3779b97f4a7c15ull;
    }
    const char *collide = getenv(TEST_COLLISIONS_ENV);
    if ((c->collide = collide && strcmp(collide, "1") == 0))
        osv_log(OSV_LOG_WARN, "cache_test_collisions",
                "\"variable\":\"" TEST_COLLISIONS_ENV "\",\"detail\":\"every response cache key hashes alike "
                "(a test hook): the cache keeps one entry per model version\"");
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void osv_cache_destroy(osv_cache_t *c)
{
    if (!c)
        return;
    for (entry_t *e = c->head, *n; e; e = n) {
        n = e->next;
        osv_free(e);
    }
    pthread_mutex_destroy(&c->lock);
    osv_free(c->buckets);
    osv_free(c);
}

void osv_cache_get_stats(osv_cache_t *c, osv_cache_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    pthread_mutex_unlock(&c->lock);
}
