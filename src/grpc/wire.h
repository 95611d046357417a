/* wire.h — internal: the hand-written protobuf codec of the hot messages, ModelInferRequest in and
 * ModelInferResponse out, so tensor bytes are never copied by the codec.
 *
 * In: a message arrives in HTTP/2 DATA chunks. The splitter (osv_gw_split_*) copies each chunk once,
 * out of the connection's read buffer, into the message's pool slot — every top-level field in wire
 * order ("meta") from the start of the slot, and each raw_input_contents payload (field 7) at a
 * 64-byte-aligned place taken from the end of the slot downwards, so ORT can read it in place (natural
 * alignment is what the core needs to bind without a copy). The slot is sized len + OSV_GW_RAW_SLACK
 * from the gRPC length prefix; the first OSV_GW_MAX_RAW entries get aligned places, which is at most
 * 63 bytes of padding each. The decoder (osv_gw_decode) then reads the meta bytes — a valid
 * ModelInferRequest without field 7 — into plain descriptors that point into the slot.
 *
 * Out: osv_gw_enc_* write the small parts of a ModelInferResponse (names, shapes, the tag and length
 * of each raw_output_contents entry) into caller memory; the front sends them interleaved with the
 * tensors' own bytes, from where ORT wrote them.
 *
 * Pure functions over caller memory: no allocation, any thread. Every length from the wire is checked
 * against what is left before it is used. */
#ifndef OSV_GRPC_WIRE_H
#define OSV_GRPC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ortserve.h"

#define OSV_GW_MAX_RAW    64 /* raw_input_contents entries placed aligned (more: refused) */
#define OSV_GW_ALIGN      64
#define OSV_GW_RAW_SLACK  ((uint64_t)OSV_GW_MAX_RAW * OSV_GW_ALIGN)
#define OSV_GW_MAX_PARAMS 32 /* parameters per map read (more: refused) */

/* ---- the splitter --------------------------------------------------------------------------------- */

typedef struct osv_gw_raw {
    uint8_t *p;
    uint64_t len;
} osv_gw_raw_t;

/* State of one message being split into its slot. Owned by the message's receiver. */
typedef struct osv_gw_split {
    uint8_t *base;      /* the slot */
    uint64_t cap;       /* its bytes (≥ message length + OSV_GW_RAW_SLACK) */
    uint64_t meta_len;  /* meta bytes written from base */
    uint64_t raw_floor; /* raw payloads live in [raw_floor, cap) */
    osv_gw_raw_t raw[OSV_GW_MAX_RAW];
    uint32_t n_raw;
    /* private: the field being read */
    int state;
    uint64_t acc;       /* varint being read */
    int shift;
    uint64_t left;      /* payload bytes left in the current field */
    uint32_t wire;      /* wire type of the current field */
    uint8_t *raw_dst;   /* where the current raw payload goes */
    uint64_t msg_len, fed;
    /* Optional, set by the receiver after init: as raw payload `i` of `len` bytes begins (the meta
     * before it is in the slot), *dst = where it goes instead of the slot (a forming batch's rows; they
     * must hold len bytes), or NULL for its aligned place in the slot. Called on the feeding thread. */
    void (*raw_place)(void *ud, uint32_t i, uint64_t len, uint8_t **dst);
    void *raw_ud;
} osv_gw_split_t;

/* A message of msg_len bytes into base[0..cap) (cap ≥ msg_len + OSV_GW_RAW_SLACK, base 64-byte aligned). */
void osv_gw_split_init(osv_gw_split_t *s, void *base, uint64_t cap, uint64_t msg_len);
/* Copies p[0..n) of the message; 0 or OSV_EPARSE / OSV_ELIMIT with err set (then stop feeding). */
int osv_gw_split_feed(osv_gw_split_t *s, const uint8_t *p, size_t n, osv_err_t *err);
/* Moves raw payload i (placed elsewhere by raw_place) to an aligned place in the slot, as if it had
 * been placed there: 0, or OSV_ELIMIT when the slot has no room (it always has: it was sized for every
 * payload). One copy of the payload; the caller counts it. */
int osv_gw_split_relocate(osv_gw_split_t *s, uint32_t i, osv_err_t *err);
/* Where the message's next bytes go when they are a raw payload's: the rest of it, *n bytes from the place
 * returned (in the slot or a forming batch's rows), or NULL when the next byte is not payload (a tag, meta,
 * the end). A receiver may read them there itself and then feed them from there: osv_gw_split_feed does
 * not copy bytes that are already in place. */
uint8_t *osv_gw_split_raw_next(const osv_gw_split_t *s, uint64_t *n);
/* The message ended: OSV_EPARSE when it ended inside a field. */
int osv_gw_split_end(const osv_gw_split_t *s, osv_err_t *err);

/* ---- the decoder ------------------------------------------------------------------------------------ */

typedef struct osv_gw_str {
    const char *p;
    uint32_t n;
} osv_gw_str_t;

typedef enum { OSV_GW_P_NONE = 0, OSV_GW_P_BOOL, OSV_GW_P_INT64, OSV_GW_P_STRING, OSV_GW_P_DOUBLE, OSV_GW_P_UINT64 }
    osv_gw_ptype_t;

/* One entry of a map<string, InferParameter>. */
typedef struct osv_gw_param {
    osv_gw_str_t key;
    osv_gw_ptype_t type;
    bool b;
    int64_t i;
    uint64_t u;
    double d;
    osv_gw_str_t s;
} osv_gw_param_t;

typedef struct osv_gw_params {
    osv_gw_param_t v[OSV_GW_MAX_PARAMS];
    uint32_t n;
} osv_gw_params_t;

typedef struct osv_gw_input {
    osv_gw_str_t name, datatype;
    int64_t dims[OSV_MAX_DIMS];
    uint32_t rank;
    const uint8_t *contents; /* the InferTensorContents message, NULL when absent */
    uint32_t contents_len;
    const uint8_t *params; /* its parameters' map entries are decoded on demand (osv_gw_params_of) */
    uint32_t params_len;   /* bytes of the first entry .. last entry span, 0 = none */
} osv_gw_input_t;

typedef struct osv_gw_output {
    osv_gw_str_t name;
    const uint8_t *params;
    uint32_t params_len;
} osv_gw_output_t;

/* A decoded ModelInferRequest: pointers into the slot (and the arrays the caller gave). */
typedef struct osv_gw_request {
    osv_gw_str_t model_name, model_version, id;
    const uint8_t *params; /* request parameters (map entries, field 4) */
    uint32_t params_len;
    osv_gw_input_t *inputs;
    uint32_t n_inputs;
    osv_gw_output_t *outputs;
    uint32_t n_outputs;
    const osv_gw_raw_t *raw;
    uint32_t n_raw;
} osv_gw_request_t;

/* Counts the inputs and outputs of meta[0..len) (so the caller can size the arrays); OSV_EPARSE on a
 * malformed message. */
int osv_gw_count(const uint8_t *meta, uint64_t len, uint32_t *n_inputs, uint32_t *n_outputs, osv_err_t *err);
/* Decodes meta[0..len) into r, whose inputs/outputs arrays hold the counts osv_gw_count gave. The
 * raw entries are the splitter's. 0 or OSV_EPARSE / OSV_ELIMIT with a message naming the field. */
int osv_gw_decode(const uint8_t *meta, uint64_t len, const osv_gw_split_t *s, osv_gw_request_t *r,
                  osv_err_t *err);
/* Decodes the map entries params[0..len) (of a field numbered `field` in its message; each entry a
 * MapEntry{key=1, value=2 InferParameter}). OSV_ELIMIT beyond OSV_GW_MAX_PARAMS entries. */
int osv_gw_params_of(const uint8_t *params, uint32_t len, uint32_t field, osv_gw_params_t *out, osv_err_t *err);
/* The parameter named key, or NULL. */
const osv_gw_param_t *osv_gw_param(const osv_gw_params_t *ps, const char *key);

/* Typed contents: decodes the InferTensorContents field that matches dt into dst (count elements of
 * dt's size; BYTES: Triton's serialized form, exactly cap bytes). OSV_EINVAL naming what is wrong
 * (another field set, a count that differs, FP16/BF16 which travel raw only). */
int osv_gw_contents(const uint8_t *msg, uint32_t len, osv_dtype_t dt, uint64_t count, void *dst, uint64_t cap,
                    osv_err_t *err);
/* BYTES typed contents: the number of elements and their serialized size (4 + length each). */
int osv_gw_contents_bytes_size(const uint8_t *msg, uint32_t len, uint64_t *count, uint64_t *size, osv_err_t *err);

/* ---- the encoder ---------------------------------------------------------------------------------------- */

/* A writer over dst[0..cap): writes past cap are counted (len grows) but not stored, so a caller sizes
 * with a NULL dst first. */
typedef struct osv_gw_w {
    uint8_t *p;
    uint64_t cap, len;
} osv_gw_w_t;

void osv_gw_w_varint(osv_gw_w_t *w, uint64_t v);
void osv_gw_w_tag(osv_gw_w_t *w, uint32_t field, uint32_t wire);
void osv_gw_w_bytes(osv_gw_w_t *w, uint32_t field, const void *p, uint64_t n); /* tag, length, bytes */
void osv_gw_w_raw(osv_gw_w_t *w, const void *p, uint64_t n);
uint32_t osv_gw_varint_len(uint64_t v);

/* One output of a response, as the front describes it. */
typedef struct osv_gw_out {
    const char *name;
    const char *datatype;
    const int64_t *dims;
    uint32_t rank;
    bool shm;              /* in a shared-memory region: parameters say its size, no raw bytes */
    uint64_t shm_bytes;
} osv_gw_out_t;

/* The InferOutputTensor of o (field 5 of ModelInferResponse, tag included). */
void osv_gw_enc_output(osv_gw_w_t *w, const osv_gw_out_t *o);
/* A ModelStreamInferResponse that answers one request with an error: error_message msg[0..msg_len), and
 * (when either is given) infer_response with the request's id and, for a refusal worth retrying, the
 * parameter "retry_after_ms" (int64). */
void osv_gw_enc_stream_error(osv_gw_w_t *w, const char *msg, uint64_t msg_len, const char *id, uint32_t id_len,
                             uint64_t retry_ms);

/* ---- the id of a message that is not kept ------------------------------------------------------------------- */

#define OSV_GW_ID_MAX 128 /* bytes of a request id echoed in an error answer */

/* Reads the `id` (field 3) of a ModelInferRequest streamed past it without keeping the message (one the
 * server refuses before receiving it), so the error answer can name the request. Malformed input
 * stops it quietly; an id longer than OSV_GW_ID_MAX is cut. */
typedef struct osv_gw_idscan {
    char id[OSV_GW_ID_MAX];
    uint32_t id_len;
    /* private */
    int state, shift;
    uint64_t acc, left, field;
    uint32_t wire;
} osv_gw_idscan_t;

void osv_gw_idscan_init(osv_gw_idscan_t *s);
void osv_gw_idscan_feed(osv_gw_idscan_t *s, const uint8_t *p, size_t n);

#endif
