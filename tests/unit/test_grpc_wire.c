/* test_grpc_wire.c — the hand-written ModelInferRequest splitter/decoder and ModelInferResponse encoder
 * (src/grpc/wire.c): raw payloads land 64-byte aligned whatever the chunking, the meta decodes to the
 * fields sent, malformed messages fail with a message, typed contents decode per datatype, and what
 * the encoder writes is what protobuf-c reads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/wire.h"
#include "grpc_service.pb-c.h"

typedef struct buf {
    uint8_t b[8192];
    size_t n;
} buf_t;

static void put(buf_t *m, const void *p, size_t n)
{
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void varint(buf_t *m, uint64_t v)
{
    do {
        uint8_t b = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        put(m, &b, 1);
        v >>= 7;
    } while (v);
}

static void field(buf_t *m, uint32_t num, const void *p, size_t n)
{
    varint(m, (uint64_t)num << 3 | 2);
    varint(m, n);
    put(m, p, n);
}

/* model "mlp", id "r1", one FP32 input x [2,3] with a raw payload of 24 bytes, output "y". */
static void sample(buf_t *m, uint8_t raw[24])
{
    buf_t in = {0}, shape = {0}, out = {0};
    varint(&shape, 2);
    varint(&shape, 3);
    field(&in, 1, "x", 1);
    field(&in, 2, "FP32", 4);
    field(&in, 3, shape.b, shape.n);
    field(&out, 1, "y", 1);
    m->n = 0;
    field(m, 1, "mlp", 3);
    field(m, 3, "r1", 2);
    field(m, 5, in.b, in.n);
    field(m, 6, out.b, out.n);
    for (int i = 0; i < 24; i++)
        raw[i] = (uint8_t)(i * 7 + 1);
    field(m, 7, raw, 24);
}

static uint8_t slot[16384] __attribute__((aligned(64)));

static int split_all(const buf_t *m, size_t chunk, osv_gw_split_t *s, osv_err_t *err)
{
    int rc = 0;
    osv_gw_split_init(s, slot, sizeof slot, m->n);
    for (size_t off = 0; off < m->n && !rc; off += chunk)
        rc = osv_gw_split_feed(s, m->b + off, m->n - off < chunk ? m->n - off : chunk, err);
    return rc ? rc : osv_gw_split_end(s, err);
}

static void split_and_decode_any_chunking(void **state)
{
    buf_t m;
    uint8_t raw[24];
    (void)state;
    sample(&m, raw);
    for (size_t chunk = 1; chunk <= m.n; chunk++) {
        osv_gw_split_t s;
        osv_err_t err;
        uint32_t ni, no;
        osv_gw_input_t in[1];
        osv_gw_output_t out[1];
        osv_gw_request_t r = {.inputs = in, .outputs = out};
        assert_int_equal(split_all(&m, chunk, &s, &err), 0);
        assert_int_equal(s.n_raw, 1);
        assert_int_equal((uintptr_t)s.raw[0].p % 64, 0);
        assert_memory_equal(s.raw[0].p, raw, 24);
        assert_int_equal(osv_gw_count(slot, s.meta_len, &ni, &no, &err), 0);
        assert_int_equal(ni, 1);
        assert_int_equal(no, 1);
        r.n_inputs = ni;
        r.n_outputs = no;
        assert_int_equal(osv_gw_decode(slot, s.meta_len, &s, &r, &err), 0);
        assert_int_equal(r.model_name.n, 3);
        assert_memory_equal(r.model_name.p, "mlp", 3);
        assert_memory_equal(r.id.p, "r1", 2);
        assert_int_equal(in[0].rank, 2);
        assert_int_equal(in[0].dims[0], 2);
        assert_int_equal(in[0].dims[1], 3);
        assert_memory_equal(in[0].datatype.p, "FP32", 4);
        assert_memory_equal(out[0].name.p, "y", 1);
        assert_int_equal(r.n_raw, 1);
    }
}

static void malformed_messages_fail(void **state)
{
    buf_t m, bad;
    uint8_t raw[24];
    osv_gw_split_t s;
    osv_err_t err;
    (void)state;
    sample(&m, raw);
    bad = m;
    bad.n -= 5; /* truncated inside the raw payload */
    osv_gw_split_init(&s, slot, sizeof slot, m.n);
    assert_int_equal(osv_gw_split_feed(&s, bad.b, bad.n, &err), 0);
    assert_int_equal(osv_gw_split_end(&s, &err), OSV_EPARSE);
    assert_non_null(strstr(err.msg, "truncated"));
    /* raw_input_contents as a varint */
    bad.n = 0;
    uint8_t v7[] = {0x38, 0x01};
    put(&bad, v7, 2);
    assert_int_equal(split_all(&bad, 1, &s, &err), OSV_EPARSE);
    assert_non_null(strstr(err.msg, "raw_input_contents"));
    /* a group */
    bad.n = 0;
    uint8_t grp[] = {0x0b};
    put(&bad, grp, 1);
    assert_int_equal(split_all(&bad, 4, &s, &err), OSV_EPARSE);
    /* a length beyond the message */
    bad.n = 0;
    uint8_t far[] = {0x0a, 0x7f, 'a'};
    put(&bad, far, 3);
    assert_int_equal(split_all(&bad, 3, &s, &err), OSV_EPARSE);
    /* more raw entries than placed aligned */
    bad.n = 0;
    for (int i = 0; i <= OSV_GW_MAX_RAW; i++)
        field(&bad, 7, "a", 1);
    assert_int_equal(split_all(&bad, 7, &s, &err), OSV_ELIMIT);
    /* meta: inputs as a varint */
    uint32_t ni, no;
    uint8_t inv[] = {0x28, 0x01};
    assert_int_equal(osv_gw_count(inv, 2, &ni, &no, &err), OSV_EPARSE);
    /* a shape with too many dims */
    buf_t in = {0}, shape = {0}, msg = {0};
    for (int i = 0; i < OSV_MAX_DIMS + 1; i++)
        varint(&shape, 1);
    field(&in, 3, shape.b, shape.n);
    field(&msg, 5, in.b, in.n);
    osv_gw_input_t gi[1];
    osv_gw_request_t r = {.inputs = gi, .n_inputs = 1};
    assert_int_equal(osv_gw_decode(msg.b, msg.n, NULL, &r, &err), OSV_ELIMIT);
}

static void typed_contents(void **state)
{
    buf_t c = {0}, packed = {0};
    int32_t out32[3];
    int8_t out8[3];
    osv_err_t err;
    (void)state;
    varint(&packed, 1);
    varint(&packed, (uint64_t)(int64_t)-2); /* int32 -2 on the wire: 10 bytes */
    varint(&packed, 127);
    field(&c, 2, packed.b, packed.n);
    assert_int_equal(osv_gw_contents(c.b, (uint32_t)c.n, OSV_DTYPE_INT32, 3, out32, sizeof out32, &err), 0);
    assert_int_equal(out32[0], 1);
    assert_int_equal(out32[1], -2);
    assert_int_equal(out32[2], 127);
    assert_int_equal(osv_gw_contents(c.b, (uint32_t)c.n, OSV_DTYPE_INT8, 3, out8, sizeof out8, &err), 0);
    assert_int_equal(out8[1], -2);
    assert_int_equal(osv_gw_contents(c.b, (uint32_t)c.n, OSV_DTYPE_INT32, 2, out32, sizeof out32, &err), OSV_EINVAL);
    assert_int_equal(osv_gw_contents(c.b, (uint32_t)c.n, OSV_DTYPE_FP32, 3, out32, sizeof out32, &err), OSV_EINVAL);
    assert_non_null(strstr(err.msg, "int_contents"));
    assert_int_equal(osv_gw_contents(c.b, (uint32_t)c.n, OSV_DTYPE_FP16, 3, out32, sizeof out32, &err), OSV_EINVAL);
    assert_non_null(strstr(err.msg, "raw"));
    /* UINT8 out of range */
    buf_t u = {0}, up = {0};
    uint8_t o8[1];
    varint(&up, 300);
    field(&u, 4, up.b, up.n);
    assert_int_equal(osv_gw_contents(u.b, (uint32_t)u.n, OSV_DTYPE_UINT8, 1, o8, 1, &err), OSV_EINVAL);
    /* BYTES */
    buf_t b = {0};
    uint64_t count, size;
    uint8_t ser[32];
    field(&b, 8, "ab", 2);
    field(&b, 8, "", 0);
    assert_int_equal(osv_gw_contents_bytes_size(b.b, (uint32_t)b.n, &count, &size, &err), 0);
    assert_int_equal(count, 2);
    assert_int_equal(size, 10);
    assert_int_equal(osv_gw_contents(b.b, (uint32_t)b.n, OSV_DTYPE_BYTES, 2, ser, size, &err), 0);
    assert_memory_equal(ser, "\x02\x00\x00\x00" "ab" "\x00\x00\x00\x00", 10);
}

static void encoder_matches_protobuf_c(void **state)
{
    int64_t dims[2] = {2, 10};
    osv_gw_out_t o = {.name = "probs", .datatype = "FP32", .dims = dims, .rank = 2, .shm = true, .shm_bytes = 80};
    uint8_t b[256];
    osv_gw_w_t w = {b, sizeof b, 0};
    (void)state;
    osv_gw_w_bytes(&w, 1, "mlp", 3);
    osv_gw_enc_output(&w, &o);
    osv_gw_w_bytes(&w, 6, "", 0);
    Inference__ModelInferResponse *r = inference__model_infer_response__unpack(NULL, w.len, b);
    assert_non_null(r);
    assert_string_equal(r->model_name, "mlp");
    assert_int_equal(r->n_outputs, 1);
    assert_string_equal(r->outputs[0]->name, "probs");
    assert_string_equal(r->outputs[0]->datatype, "FP32");
    assert_int_equal(r->outputs[0]->n_shape, 2);
    assert_int_equal(r->outputs[0]->shape[1], 10);
    assert_int_equal(r->outputs[0]->n_parameters, 1);
    assert_string_equal(r->outputs[0]->parameters[0]->key, "shared_memory_byte_size");
    assert_int_equal(r->outputs[0]->parameters[0]->value->uint64_param, 80);
    assert_int_equal(r->n_raw_output_contents, 1);
    inference__model_infer_response__free_unpacked(r, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(split_and_decode_any_chunking),
        cmocka_unit_test(malformed_messages_fail),
        cmocka_unit_test(typed_contents),
        cmocka_unit_test(encoder_matches_protobuf_c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
