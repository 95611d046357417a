/* inflate.h — internal: the Content-Encoding of an HTTP request; decoding it is the request layer's
 * (serve/inflate.h, shared with gRPC's grpc-encoding). */
#ifndef OSV_HTTP_INFLATE_H
#define OSV_HTTP_INFLATE_H

#include "http/parser.h"
#include "serve/inflate.h"

/* Content-Encoding of a request (h may be NULL: identity). */
int osv_content_encoding(const osv_http_header_t *h);

#endif
