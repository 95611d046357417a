/* fuzz_grpc_decode.c — the gRPC front's hand-written ModelInferRequest path (src/grpc/wire.c): the
 * splitter fed in chunks (as HTTP/2 DATA frames arrive), the meta decoder, every parameters map and
 * the typed contents of every input decoded for every datatype into a bounded buffer.
 *
 * Input layout: byte 0 = chunk size (0: the whole message at once), then the message. Invariants
 * beyond "no crash": every raw payload lies inside the slot, 64-byte aligned, below the meta bytes;
 * the meta never grows past the message; a decoded count of inputs/outputs matches osv_gw_count. */
#include <stdlib.h>
#include <string.h>

#include "grpc/wire.h"
#include "support/fuzz.h"

#define MAX_MSG (1u << 20)

static uint8_t slot[MAX_MSG + OSV_GW_RAW_SLACK] __attribute__((aligned(64)));
static uint8_t out[1u << 16] __attribute__((aligned(64)));

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
    chunk = data[0] ? data[0] : size;
    data++, len = size - 1;
    osv_gw_split_init(&s, slot, sizeof slot, len);
    for (size_t off = 0; off < len && !rc; off += chunk)
        rc = osv_gw_split_feed(&s, data + off, len - off < chunk ? len - off : chunk, &err);
    if (!rc)
        rc = osv_gw_split_end(&s, &err);
    FZ_CHECK(s.meta_len <= len, "meta %llu bytes from a %zu-byte message", (unsigned long long)s.meta_len, len);
    for (uint32_t i = 0; i < s.n_raw; i++) {
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
