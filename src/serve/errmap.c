/* errmap.c — the one error-code → status table of every front; see errmap.h. */
#include "serve/errmap.h"

#include "ortserve/error.h"

/* gRPC status codes (grpc/include/grpc/impl/codegen/status.h, the protocol's numbers). */
enum {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_UNAUTHENTICATED = 16,
};

typedef struct row {
    int code;
    short http, grpc;
    bool retry;
} row_t;

static const row_t table[] = {
    {0, 200, GRPC_OK, false},
    {OSV_EINVAL, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_EDTYPE, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_ESHAPE, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_ELIMIT, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_EOVERFLOW, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_EPARSE, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_EUNSUPPORTED, 400, GRPC_INVALID_ARGUMENT, false},
    {OSV_EMEDIA, 415, GRPC_INVALID_ARGUMENT, false},
    {OSV_ELOAD, 400, GRPC_INVALID_ARGUMENT, false}, /* as Triton answers a failed load */
    {OSV_EPERM, 403, GRPC_PERMISSION_DENIED, false},
    {OSV_ENOTFOUND, 404, GRPC_NOT_FOUND, false},
    {OSV_EEXIST, 409, GRPC_ALREADY_EXISTS, false},
    {OSV_ETOOBIG, 413, GRPC_RESOURCE_EXHAUSTED, false},
    {OSV_EBUSY, 503, GRPC_UNAVAILABLE, true},
    {OSV_ENOMEM, 503, GRPC_UNAVAILABLE, true},
    {OSV_EUNAVAIL, 503, GRPC_UNAVAILABLE, true},
    {OSV_ECANCELED, 504, GRPC_DEADLINE_EXCEEDED, false},
    {OSV_ETIMEDOUT, 504, GRPC_DEADLINE_EXCEEDED, false},
    {OSV_EORT, 500, GRPC_INTERNAL, false},
    {OSV_EIO, 500, GRPC_INTERNAL, false},
    {OSV_EVERSION, 500, GRPC_INTERNAL, false},
    {OSV_ENOTIMPL, 501, GRPC_UNIMPLEMENTED, false},
    {OSV_EPROTO, 400, GRPC_INTERNAL, false}, /* framing the protocol forbids (gRPC: INTERNAL) */
    {OSV_EAUTH, 401, GRPC_UNAUTHENTICATED, false},
};

static const row_t *row_of(int code)
{
    static const row_t internal = {0, 500, GRPC_INTERNAL, false};
    for (unsigned i = 0; i < sizeof table / sizeof *table; i++)
        if (table[i].code == code)
            return &table[i];
    return &internal;
}

int osv_status_http(int code)
{
    return row_of(code)->http;
}

int osv_status_grpc(int code)
{
    return row_of(code)->grpc;
}

bool osv_status_retry(int code)
{
    return row_of(code)->retry;
}
