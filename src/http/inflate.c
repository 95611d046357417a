/* inflate.c — which Content-Encoding a request body has (serve/inflate.c decodes it). */
#include <strings.h>

#include "http/inflate.h"

int osv_content_encoding(const osv_http_header_t *h)
{
    if (!h || (h->value_len == 8 && strncasecmp(h->value, "identity", 8) == 0))
        return OSV_ENC_IDENTITY;
    if (h->value_len == 4 && strncasecmp(h->value, "gzip", 4) == 0)
        return OSV_ENC_GZIP;
    if (h->value_len == 7 && strncasecmp(h->value, "deflate", 7) == 0)
        return OSV_ENC_DEFLATE;
    return OSV_ENC_UNSUPPORTED;
}
