/* tensorproto.h — a small, strict decoder for serialized onnx.TensorProto files (the input_K.pb and
 * output_K.pb of ONNX backend test cases), written against the protobuf wire format by hand.
 *
 * A decoded tensor holds its element data in native layout in a 64-byte-aligned heap buffer, ready
 * to be bound zero-copy; STRING tensors are serialized in Triton's BYTES format (u32 little-endian
 * length + bytes, per element). Every length and count is bounds-checked: malformed input yields
 * TP_EMALFORMED and a message, never a crash. Little-endian hosts only. */
#ifndef OSV_TEST_TENSORPROTO_H
#define OSV_TEST_TENSORPROTO_H

#include <stddef.h>
#include <stdint.h>

#define TP_MAX_DIMS  16
#define TP_MAX_BYTES (1ull << 30) /* largest tensor (and file) accepted */

/* Results. */
enum { TP_OK = 0, TP_EUNSUPPORTED = 1, TP_EMALFORMED = 2, TP_EIO = 3, TP_ENOMEM = 4 };

/* onnx.TensorProto.DataType values (the same numbering as ONNXTensorElementDataType). */
enum {
    TP_UNDEFINED = 0,
    TP_FLOAT = 1,
    TP_UINT8 = 2,
    TP_INT8 = 3,
    TP_UINT16 = 4,
    TP_INT16 = 5,
    TP_INT32 = 6,
    TP_INT64 = 7,
    TP_STRING = 8,
    TP_BOOL = 9,
    TP_FLOAT16 = 10,
    TP_DOUBLE = 11,
    TP_UINT32 = 12,
    TP_UINT64 = 13,
    TP_COMPLEX64 = 14,
    TP_COMPLEX128 = 15,
    TP_BFLOAT16 = 16
};

typedef struct tp_tensor {
    char *name;    /* NUL-terminated, "" when the file has none */
    int data_type; /* TP_* */
    uint32_t rank;
    int64_t dims[TP_MAX_DIMS];
    uint64_t count; /* elements */
    void *data;     /* 64-byte aligned, never NULL after a successful decode */
    uint64_t bytes; /* count × element size; STRING: size of the serialized form */
} tp_tensor_t;

/* Element size of a decodable type; 0 for STRING and for types this decoder does not handle. */
size_t tp_elem_size(int data_type);
/* "FLOAT", "STRING", ... ("?" when unknown). */
const char *tp_type_name(int data_type);

/* Decodes buf[0..len) into *t (zeroed first). Returns TP_OK, TP_EUNSUPPORTED (external data,
 * segments, complex/float8/int4 types, rank > TP_MAX_DIMS) or TP_EMALFORMED, with a message in
 * msg[0..cap) on failure. On failure *t holds nothing to free. */
int tp_decode(const uint8_t *buf, size_t len, tp_tensor_t *t, char *msg, size_t cap);

/* Reads the whole file at `path` (≤ TP_MAX_BYTES) and decodes it. TP_EIO when unreadable. */
int tp_load(const char *path, tp_tensor_t *t, char *msg, size_t cap);

/* Frees what a successful decode allocated; safe on a zeroed tensor. */
void tp_free(tp_tensor_t *t);

#endif
