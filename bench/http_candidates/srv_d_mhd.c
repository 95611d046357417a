/* Candidate D: GNU libmicrohttpd 0.9.75 (Debian libmicrohttpd-dev).
 *
 * Internal epoll thread (MHD_USE_EPOLL_INTERNAL_THREAD, plus MHD_USE_TURBO),
 * MHD_OPTION_THREAD_POOL_SIZE=N for N>1 (all pool threads share one listen
 * socket). MHD recv()s into the per-connection memory pool's read buffer and
 * calls the access handler with pointers into that buffer (upload_data), piece
 * by piece; we copy each piece into the pool slot.
 */
#include "common.h"

#include <microhttpd.h>

static struct MHD_Response *resp_ok, *resp_404, *resp_400, *resp_413, *resp_503;
static int notfound_marker;

static struct MHD_Response *canned(const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)(uintptr_t)body, MHD_RESPMEM_PERSISTENT);
    if (r == NULL || MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, JSON_CT) != MHD_YES) {
        fprintf(stderr, "MHD response init failed\n");
        exit(1);
    }
    return r;
}

enum { ST_OK = 0, ST_TOOBIG = 1 };

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    if (*con_cls == NULL) { /* headers complete */
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0 || strcmp(url, INFER_PATH) != 0) {
            *con_cls = &notfound_marker;
            return MHD_YES;
        }
        struct slot *s = slot_acquire();
        if (s == NULL)
            return MHD_queue_response(conn, 503, resp_503);
        *con_cls = s;
        return MHD_YES;
    }
    if (*con_cls == &notfound_marker) {
        if (*upload_data_size != 0) { /* discard body, answer when complete */
            *upload_data_size = 0;
            return MHD_YES;
        }
        return MHD_queue_response(conn, MHD_HTTP_NOT_FOUND, resp_404);
    }
    struct slot *s = *con_cls;
    if (*upload_data_size != 0) {
        size_t n = *upload_data_size;
        if (s->route == ST_OK && n <= SLOT_SIZE - s->len) {
            /* copy #2: MHD connection read buffer -> slot */
            memcpy(s->mem + s->len, upload_data, n);
            s->len += n;
            stat_add(&stat_body_copied, n);
        } else {
            s->route = ST_TOOBIG; /* keep consuming, answer 413 at the end */
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    stat_add(&stat_requests, 1);
    if (s->route == ST_TOOBIG)
        return MHD_queue_response(conn, MHD_HTTP_CONTENT_TOO_LARGE, resp_413);
    if (!body_ok(s->mem, s->len))
        return MHD_queue_response(conn, MHD_HTTP_BAD_REQUEST, resp_400);
    return MHD_queue_response(conn, MHD_HTTP_OK, resp_ok);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    if (*con_cls != NULL && *con_cls != &notfound_marker)
        slot_release(*con_cls); /* same thread that served the request */
    *con_cls = NULL;
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv);
    sigset_t set;
    block_signals(&set);

    resp_ok = canned(RESP_BODY);
    resp_404 = canned(NOTFOUND_BODY);
    resp_400 = canned(BADREQ_BODY);
    resp_413 = canned(TOOBIG_BODY);
    resp_503 = canned(BUSY_BODY);

    struct sockaddr_in addr = loopback_addr(o.port);
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_CONNECTION_LIMIT, 10000, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, 60, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL},
        {o.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, o.threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG, (uint16_t)o.port,
                         NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "MHD_start_daemon failed\n");
        return 1;
    }
    fprintf(stderr, "srv_d_mhd %s: 127.0.0.1:%d threads=%d\n", MHD_get_version(), o.port, o.threads);
    wait_for_signal(&set);
    MHD_stop_daemon(d);
    stats_print("srv_d_mhd");
    return 0;
}
