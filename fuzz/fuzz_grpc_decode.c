/* fuzz_grpc_decode.c — the gRPC front's hand-written ModelInferRequest path (src/grpc/wire.c): the
 * splitter fed in chunks (as HTTP/2 DATA frames arrive), the meta decoder, every parameters map and
 * the typed contents of every input decoded for every datatype into a bounded buffer.
 *
 * Input layout: byte 0 = chunk size in its low 7 bits (0: the whole message at once), its high bit
 * asks for the receiver's placement (the gRPC front's early build): raw payloads go to a separate
 * "rows" buffer as they begin, until the third one (or one that does not fit) undoes it — every
 * payload placed so far moves into the slot (osv_gw_split_relocate, which must always find room), and
 * the rest is placed as without a receiver. Then the message. Invariants beyond "no crash": every raw
 * payload lies inside the slot, 64-byte aligned, below the meta bytes (or, placed, inside the rows
 * buffer); a relocated payload keeps its bytes; the meta never grows past the message; a decoded count
 * of inputs/outputs matches osv_gw_count. Without placement the message is split a second time the way
 * the front reads a payload in place (each chunk's leading payload bytes written where
 * osv_gw_split_raw_next says, then fed from there), which must give the same slot. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/wire.h"
#include "support/fuzz.h"

#define MAX_MSG (1u << 20)

static uint8_t slot[MAX_MSG + OSV_GW_RAW_SLACK] __attribute__((aligned(64)));
static uint8_t out[1u << 16] __attribute__((aligned(64)));
static uint8_t rows[1u << 16] __attribute__((aligned(64)));
static uint8_t moved[1u << 16];
static uint8_t slot2[MAX_MSG + OSV_GW_RAW_SLACK] __attribute__((aligned(64)));

typedef struct place {
    osv_gw_split_t *s;
    size_t used;
    bool undone;
} place_t;

/* The receiver's placement: rows until the third payload or one that does not fit, then undone. */
static void place(void *ud, uint32_t i, uint64_t len, uint8_t **dst)
{
    place_t *p = ud;
    osv_err_t err;
    if (i == 2 || !len || len >= sizeof rows - p->used) { /* (a placed payload lies strictly inside rows) */
        for (uint32_t k = 0; k < p->s->n_raw; k++) {
            uint64_t n = p->s->raw[k].len;
            FZ_CHECK(n <= sizeof moved, "a placed payload of %llu bytes", (unsigned long long)n);
            memcpy(moved, p->s->raw[k].p, n);
            FZ_CHECK(osv_gw_split_relocate(p->s, k, &err) == 0, "relocate %u: %s", k, err.msg);
            FZ_CHECK(memcmp(moved, p->s->raw[k].p, n) == 0, "relocated payload %u changed", k);
        }
        p->s->raw_place = NULL;
        p->undone = true;
        return;
    }
    *dst = rows + p->used;
    p->used += len;
}

/* One chunk as the front feeds it: its leading raw payload bytes (if any) read "in place" first. */
static int feed_in_place(osv_gw_split_t *s, const uint8_t *p, size_t n, osv_err_t *err)
{
    uint64_t room;
    uint8_t *at = osv_gw_split_raw_next(s, &room);
    size_t k = at ? (room < n ? (size_t)room : n) : 0;
    int rc = 0;
    if (k) {
        memcpy(at, p, k);
        rc = osv_gw_split_feed(s, at, k, err);
    }
    return rc || k == n ? rc : osv_gw_split_feed(s, p + k, n - k, err);
}

/* The in-place split of data[0..len) gives what the copying split `a` (return code rc) gave. */
static void check_in_place(const osv_gw_split_t *a, int rc, const uint8_t *data, size_t len, size_t chunk)
{
    osv_gw_split_t b;
    osv_err_t err;
    int rc2 = 0;
    osv_gw_split_init(&b, slot2, sizeof slot2, len);
    for (size_t off = 0; off < len && !rc2; off += chunk)
        rc2 = feed_in_place(&b, data + off, len - off < chunk ? len - off : chunk, &err);
    if (!rc2)
        rc2 = osv_gw_split_end(&b, &err);
    FZ_CHECK(rc2 == rc, "in place: rc %d, copying: %d", rc2, rc);
    if (rc)
        return;
    FZ_CHECK(b.meta_len == a->meta_len && b.n_raw == a->n_raw, "in place: another split");
    FZ_CHECK(memcmp(slot2, slot, a->meta_len) == 0, "in place: other meta bytes");
    for (uint32_t i = 0; i < a->n_raw; i++)
        FZ_CHECK(b.raw[i].len == a->raw[i].len && b.raw[i].p - slot2 == a->raw[i].p - slot &&
                     memcmp(b.raw[i].p, a->raw[i].p, a->raw[i].len) == 0,
                 "in place: raw %u differs", i);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return 0;
}

static void contents_all(const osv_gw_input_t *in)
{
    osv_err_t err;
    uint64_t count, size;
    if (!in->contents)
        return;
    for (int dt = 0; dt < OSV_DTYPE_COUNT; dt++) {
        uint64_t n = osv_dtype_size((osv_dtype_t)dt) ? sizeof out / osv_dtype_size((osv_dtype_t)dt) : 0;
        if (dt == OSV_DTYPE_BYTES) {
            if (osv_gw_contents_bytes_size(in->contents, in->contents_len, &count, &size, &err) == 0 &&
                size <= sizeof out)
                osv_gw_contents(in->contents, in->contents_len, OSV_DTYPE_BYTES, count, out, size, &err);
            continue;
        }
        for (uint64_t c = 0; c < 3 && n; c++) /* a few counts: 0, the elements there are, more */
            osv_gw_contents(in->contents, in->contents_len, (osv_dtype_t)dt, c == 0 ? 0 : c == 1 ? 1 : n, out,
                            sizeof out, &err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    osv_gw_split_t s;
    osv_err_t err;
    size_t chunk, len;
    int rc = 0;
    if (size < 1 || size - 1 > MAX_MSG)
        return 0;
    place_t pl = {.s = &s};
    bool placing = data[0] & 0x80;
    chunk = data[0] & 0x7f ? data[0] & 0x7f : size;
    data++, len = size - 1;
    osv_gw_split_init(&s, slot, sizeof slot, len);
    if (placing) {
        s.raw_place = place;
        s.raw_ud = &pl;
    }
    for (size_t off = 0; off < len && !rc; off += chunk)
        rc = osv_gw_split_feed(&s, data + off, len - off < chunk ? len - off : chunk, &err);
    if (!rc)
        rc = osv_gw_split_end(&s, &err);
    if (!placing)
        check_in_place(&s, rc, data, len, chunk);
    FZ_CHECK(s.meta_len <= len, "meta %llu bytes from a %zu-byte message", (unsigned long long)s.meta_len, len);
    for (uint32_t i = 0; i < s.n_raw; i++) {
        if (placing && !pl.undone) { /* (a zero-length payload ends the placement: every one here has bytes) */
            FZ_CHECK(s.raw[i].p >= rows && s.raw[i].p + s.raw[i].len <= rows + sizeof rows, "raw %u outside rows", i);
            continue;
        }
        FZ_CHECK((uintptr_t)s.raw[i].p % 64 == 0, "raw %u misaligned", i);
        FZ_CHECK(s.raw[i].p >= slot + s.meta_len && s.raw[i].p + s.raw[i].len <= slot + sizeof slot,
                 "raw %u outside its place", i);
    }
    if (rc)
        return 0;
    uint32_t ni, no;
    if (osv_gw_count(slot, s.meta_len, &ni, &no, &err) != 0)
        return 0;
    osv_gw_input_t *ins = calloc(ni ? ni : 1, sizeof *ins);
    osv_gw_output_t *outs = calloc(no ? no : 1, sizeof *outs);
    osv_gw_request_t r = {.inputs = ins, .n_inputs = ni, .outputs = outs, .n_outputs = no};
    FZ_CHECK(ins && outs, "out of memory");
    if (osv_gw_decode(slot, s.meta_len, &s, &r, &err) == 0) {
        osv_gw_params_t ps;
        FZ_CHECK(r.n_inputs == ni && r.n_outputs == no, "decode found %u/%u, count %u/%u", r.n_inputs,
                 r.n_outputs, ni, no);
        if (r.params)
            osv_gw_params_of(r.params, r.params_len, 4, &ps, &err);
        for (uint32_t i = 0; i < ni; i++) {
            FZ_CHECK(ins[i].rank <= OSV_MAX_DIMS, "rank %u", ins[i].rank);
            if (ins[i].params && osv_gw_params_of(ins[i].params, ins[i].params_len, 4, &ps, &err) == 0)
                osv_gw_param(&ps, "shared_memory_region");
            contents_all(&ins[i]);
        }
        for (uint32_t i = 0; i < no; i++)
            if (outs[i].params)
                osv_gw_params_of(outs[i].params, outs[i].params_len, 2, &ps, &err);
    }
    free(ins);
    free(outs);
    return 0;
}
