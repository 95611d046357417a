/* test_fault.c — fault injection over the request path, SQLite's method, in process: for each kind
 * of request, a fresh server (so every connection, buffer, arena chunk, timer slot, pool slot and
 * response buffer is taken cold), then the N-th allocation from the request's first byte fails —
 * once, and in a second pass persistently — for N = 1, 2, 3, … until a request completes with no
 * failure injected. Every run must end in a complete HTTP response that is either the right answer
 * or a 503 with Retry-After and a JSON {"error": …} body (running out of memory is a reason to retry,
 * never a 500); the same server must then answer the request correctly
 * with injection off; once it is stopped no pool slot is in use and every allocation ortserve made
 * is freed (osv_alloc_live; the ASan build adds LeakSanitizer). Allocations are the osv_malloc
 * family and slot-pool acquisitions (include/ortserve/alloc.h); ONNX Runtime's own allocations are
 * outside the hook — an ORT failure is tested with fail.onnx instead (tests/e2e/test_server_overload.py,
 * class Failures).
 *
 * The client is plain blocking sockets on 127.0.0.1 (it allocates nothing through osv_malloc, so
 * the countdown counts the server's allocations only). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "testutil.h"

#include "http/http.h"
#include "obs/log.h"
#include "obs/obs.h"

#define MAX_N     1000 /* a request making more allocations than this fails the test */
#define RESP_MAX  (1u << 20)
#define SHM_BYTES 4096

/* "/osv-test-fault-<pid>": one object per process, so test runs side by side (the release and the
 * ASan build, other checkouts) do not unlink each other's. */
static char shm_key[64];

static char repo_dir[256];
static osv_repo_t *repo;
static osv_server_opts_t sopts; /* the repository's load hook keeps a pointer to it */

typedef struct resp {
    int status;
    char content_type[64];
    char *body;
    size_t body_len;
    size_t total;     /* bytes received */
    bool retry_after; /* a Retry-After header came with it */
} resp_t;

/* One kind of request: its bytes and what a correct answer is. */
typedef struct kind {
    const char *name;
    void (*build)(char *buf, size_t cap, size_t *len);
    bool (*correct)(const resp_t *r); /* the answer when nothing failed */
    bool inline_runs;                 /* server runs fast models on the loop (else on a worker) */
    bool allow_shm;
    /* With injection off, sent before the request is repeated (e.g. unregister what a run registered). */
    void (*before_verify)(char *buf, size_t cap, size_t *len);
} kind_t;

/* ---- a minimal blocking HTTP/1.1 client ------------------------------------------------------------- */

static int connect_to(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {30, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static const char *find_ci(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(hay + i, needle, k) == 0)
            return hay + i;
    return NULL;
}

/* Sends req (which asks for Connection: close) and reads until EOF. Returns 0 with *r filled in, -1
 * when no complete response arrived (connection refused, reset, timed out, or a truncated body). */
static int exchange(uint16_t port, const char *req, size_t len, char *buf, resp_t *r)
{
    int fd = connect_to(port);
    size_t got = 0, sent = 0;
    memset(r, 0, sizeof *r);
    if (fd < 0)
        return -1;
    while (sent < len) {
        ssize_t n = send(fd, req + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may answer (503) before reading everything: read what it says */
        sent += (size_t)n;
    }
    for (;;) {
        ssize_t n = recv(fd, buf + got, RESP_MAX - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == RESP_MAX - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    r->total = got;
    const char *end = strstr(buf, "\r\n\r\n");
    if (got < 12 || (strncmp(buf, "HTTP/1.1 ", 9) != 0 && strncmp(buf, "HTTP/1.0 ", 9) != 0) || !end)
        return -1;
    r->status = atoi(buf + 9);
    const char *cl = find_ci(buf, (size_t)(end - buf), "\r\nContent-Length: ");
    const char *ct = find_ci(buf, (size_t)(end - buf), "\r\nContent-Type: ");
    r->retry_after = find_ci(buf, (size_t)(end - buf), "\r\nRetry-After: ") != NULL;
    if (!cl)
        return -1;
    if (ct) {
        size_t k = strcspn(ct + 16, "\r\n");
        snprintf(r->content_type, sizeof r->content_type, "%.*s", (int)k, ct + 16);
    }
    r->body = (char *)end + 4;
    r->body_len = (size_t)strtoul(cl + 18, NULL, 10);
    if ((size_t)(buf + got - r->body) != r->body_len)
        return -1; /* truncated, or more bytes than announced */
    return 0;
}

/* ---- request kinds ----------------------------------------------------------------------------- */

/* head: request line and headers, each ending in CRLF; Content-Length and the blank line are added. */
static void put(char *buf, size_t cap, size_t *len, const char *head, const void *body, size_t body_len)
{
    int n = snprintf(buf, cap, "%sContent-Length: %zu\r\n\r\n", head, body_len);
    assert_true(n > 0 && (size_t)n + body_len < cap);
    memcpy(buf + n, body, body_len);
    *len = (size_t)n + body_len;
}

static void get(char *buf, size_t cap, size_t *len, const char *path)
{
    int n = snprintf(buf, cap, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    assert_true(n > 0 && (size_t)n < cap);
    *len = (size_t)n;
}

static void b_ready(char *b, size_t cap, size_t *len)
{
    get(b, cap, len, "/v2/health/ready");
}
static void b_meta(char *b, size_t cap, size_t *len)
{
    get(b, cap, len, "/v2/models/mlp");
}
static void b_stats(char *b, size_t cap, size_t *len)
{
    get(b, cap, len, "/v2/models/stats");
}
static void b_metrics(char *b, size_t cap, size_t *len)
{
    get(b, cap, len, "/metrics");
}
static void b_index(char *b, size_t cap, size_t *len)
{
    static const char body[] = "{}";
    put(b, cap, len, "POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", body,
        sizeof body - 1);
}
static void b_load(char *b, size_t cap, size_t *len)
{
    put(b, cap, len, "POST /v2/repository/models/mlp/load HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", "",
        0);
}

static char mlp_json[4096];

static void b_infer_json(char *b, size_t cap, size_t *len)
{
    put(b, cap, len, "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", mlp_json,
        strlen(mlp_json));
}

/* The same JSON body in three chunks: the chunked body lands in a pool slot. */
static void b_infer_chunked(char *b, size_t cap, size_t *len)
{
    size_t n = strlen(mlp_json), a = n / 3, c2 = n / 3;
    int k = snprintf(b, cap,
                     "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%.*s\r\n%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n",
                     a, (int)a, mlp_json, c2, (int)c2, mlp_json + a, n - a - c2, mlp_json + a + c2);
    assert_true(k > 0 && (size_t)k < cap);
    *len = (size_t)k;
}

#define SCALE_N 1024
static float scale_in[SCALE_N];

/* Binary tensor extension on scale2x: the tensor is received straight into the slot; binary output. */
static void b_infer_binary(char *b, size_t cap, size_t *len)
{
    char hdr[512];
    int h = snprintf(
        hdr, sizeof hdr,
        "{\"inputs\":[{\"name\":\"x\",\"shape\":[%d],\"datatype\":\"FP32\",\"parameters\":"
        "{\"binary_data_size\":%zu}}],\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":true}}]}",
        SCALE_N, sizeof scale_in);
    int k = snprintf(b, cap,
                     "POST /v2/models/scale2x/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Inference-Header-Content-Length: %d\r\nContent-Length: %zu\r\n\r\n%s",
                     h, (size_t)h + sizeof scale_in, hdr);
    assert_true(k > 0 && (size_t)k + sizeof scale_in < cap);
    memcpy(b + k, scale_in, sizeof scale_in);
    *len = (size_t)k + sizeof scale_in;
}

/* fail.onnx: the model's own run error (500 with ORT's message) is the correct answer. */
static void b_infer_fail(char *b, size_t cap, size_t *len)
{
    static const char body[] =
        "{\"inputs\":[{\"name\":\"x\",\"shape\":[4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]},"
        "{\"name\":\"shape\",\"shape\":[1],\"datatype\":\"INT64\",\"data\":[3]}]}";
    put(b, cap, len, "POST /v2/models/fail/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", body,
        sizeof body - 1);
}

static void b_shm_register(char *b, size_t cap, size_t *len)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"key\":\"%s\",\"offset\":0,\"byte_size\":1024}", shm_key);
    put(b, cap, len,
        "POST /v2/systemsharedmemory/region/r1/register HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", body,
        (size_t)n);
}

static void b_shm_unregister(char *b, size_t cap, size_t *len)
{
    put(b, cap, len,
        "POST /v2/systemsharedmemory/region/r1/unregister HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", "",
        0);
}

static bool is_json_ok(const resp_t *r)
{
    return r->status == 200 && strcmp(r->content_type, "application/json") == 0;
}
static bool c_ready(const resp_t *r)
{
    return is_json_ok(r) && strstr(r->body, "\"ready\":true");
}
static bool c_meta(const resp_t *r)
{
    return is_json_ok(r) && strstr(r->body, "\"name\":\"mlp\"") && strstr(r->body, "\"probs\"");
}
static bool c_stats(const resp_t *r)
{
    return is_json_ok(r) && strstr(r->body, "\"model_stats\"");
}
static bool c_metrics(const resp_t *r)
{
    return r->status == 200 && strstr(r->body, "# TYPE ortserve_");
}
static bool c_index(const resp_t *r)
{
    return is_json_ok(r) && strstr(r->body, "\"name\":\"mlp\"");
}
static bool c_empty_ok(const resp_t *r)
{
    return r->status == 200 && r->body_len == 0;
}

static char mlp_expected[4096]; /* the JSON answer with nothing injected (baseline run) */

static bool c_infer_json(const resp_t *r)
{
    return is_json_ok(r) && r->body_len == strlen(mlp_expected) &&
           memcmp(r->body, mlp_expected, r->body_len) == 0;
}

static bool c_infer_binary(const resp_t *r)
{
    if (r->status != 200 || r->body_len < sizeof scale_in)
        return false;
    const float *y = (const float *)(r->body + r->body_len - sizeof scale_in);
    for (int i = 0; i < SCALE_N; i++) {
        float want = 2 * scale_in[i], got;
        memcpy(&got, y + i, sizeof got);
        if (got != want)
            return false;
    }
    return true;
}

static bool c_infer_fail(const resp_t *r)
{
    return r->status == 500 && strcmp(r->content_type, "application/json") == 0 && strstr(r->body, "Reshape");
}

static const kind_t kinds[] = {
    {"health_ready", b_ready, c_ready, true, false, NULL},
    {"model_metadata", b_meta, c_meta, true, false, NULL},
    {"infer_json_inline", b_infer_json, c_infer_json, true, false, NULL},
    {"infer_json_worker", b_infer_json, c_infer_json, false, false, NULL},
    {"infer_chunked", b_infer_chunked, c_infer_json, true, false, NULL},
    {"infer_binary_worker", b_infer_binary, c_infer_binary, false, false, NULL},
    {"infer_model_error", b_infer_fail, c_infer_fail, false, false, NULL},
    {"statistics", b_stats, c_stats, true, false, NULL},
    {"metrics", b_metrics, c_metrics, true, false, NULL},
    {"repository_index", b_index, c_index, true, false, NULL},
    {"model_load", b_load, c_empty_ok, true, false, NULL},
    {"shm_register", b_shm_register, c_empty_ok, true, true, b_shm_unregister},
};

/* ---- one server per run -------------------------------------------------------------------------- */

typedef struct running {
    osv_server_t *s;
    pthread_t thread;
} running_t;

static void *run_server(void *arg)
{
    osv_server_run(arg);
    return NULL;
}

static void start(running_t *rs, const kind_t *k)
{
    osv_err_t err;
    osv_server_opts_t o = sopts;
    o.inline_threshold_ns = k->inline_runs ? 200000 : 0;
    o.allow_shm = k->allow_shm;
    OSV_ASSERT_OK(osv_server_create(&o, osv_test_env(), repo, &rs->s, &err), &err);
    assert_int_equal(pthread_create(&rs->thread, NULL, run_server, rs->s), 0);
}

static void stop(running_t *rs)
{
    osv_pool_stats_t ps;
    osv_server_stop(rs->s);
    assert_int_equal(pthread_join(rs->thread, NULL), 0);
    osv_pool_get_stats(rs->s->pool, &ps);
    for (uint32_t i = 0; i < ps.n_classes; i++)
        if (ps.cls[i].in_use)
            fail_msg("%u pool slot(s) of %llu bytes still in use after the server stopped", ps.cls[i].in_use,
                     (unsigned long long)ps.cls[i].slot_size);
    osv_server_destroy(rs->s);
}

/* An answer to a request that met an injected failure and could not recover: a complete 503 with
 * Retry-After and {"error": "..."}. Any other 5xx (a 500 for OSV_ENOMEM, say) fails the test at the
 * allocation that caused it. */
static void assert_clean_error(const kind_t *k, uint64_t n, int persistent, const resp_t *r)
{
    if (r->status != 503 || !r->retry_after || strcmp(r->content_type, "application/json") != 0 ||
        r->body_len < 12 || strncmp(r->body, "{\"error\":\"", 10) != 0 || r->body[r->body_len - 1] != '}')
        fail_msg("%s, allocation %llu failing%s: neither the right answer nor a 503 with Retry-After and a "
                 "JSON error: %d %s%s %.*s",
                 k->name, (unsigned long long)n, persistent ? " (persistently)" : "", r->status,
                 r->content_type, r->retry_after ? " (Retry-After)" : "",
                 (int)(r->body_len > 300 ? 300 : r->body_len), r->body);
}

/* Outcomes of the runs with a failure injected: the right answer anyway (recovered, or the failure
 * came after the answer was sent), or 503 (anything else has failed the test). */
static unsigned n_right, n_503;

/* One run: returns the number of failures injected into the request. */
static uint64_t run_once(const kind_t *k, uint64_t n, int persistent, char *req, char *buf)
{
    running_t rs;
    resp_t r;
    size_t len;
    uint64_t live = osv_alloc_live(), before;
    k->build(req, RESP_MAX, &len);
    start(&rs, k);
    before = osv_alloc_failures_injected();
    osv_alloc_fail_after(n, persistent);
    int rc = exchange(rs.s->port, req, len, buf, &r);
    osv_alloc_fail_after(0, 0);
    uint64_t injected = osv_alloc_failures_injected() - before;
    if (rc != 0)
        fail_msg("%s, allocation %llu failing%s: no complete response (%zu bytes: %.600s)", k->name,
                 (unsigned long long)n, persistent ? " (persistently)" : "", r.total, buf);
    if (injected == 0 && !k->correct(&r))
        fail_msg("%s: wrong answer with nothing injected: %d %.300s", k->name, r.status, r.body);
    if (!k->correct(&r)) /* else the failure was recovered from, or came after the answer */
        assert_clean_error(k, n, persistent, &r);
    if (injected)
        *(k->correct(&r) ? &n_right : &n_503) += 1;
    if (getenv("OSV_FAULT_VERBOSE"))
        print_message("  %s n=%llu%s: %d %.*s\n", k->name, (unsigned long long)n,
                      persistent ? " persistent" : "", r.status, (int)(r.body_len > 120 ? 120 : r.body_len),
                      r.body);
    /* The same server, injection off: it still answers correctly. */
    if (injected) {
        if (k->before_verify) {
            k->before_verify(req, RESP_MAX, &len);
            assert_int_equal(exchange(rs.s->port, req, len, buf, &r), 0);
            assert_int_equal(r.status, 200);
        }
        k->build(req, RESP_MAX, &len);
        if (exchange(rs.s->port, req, len, buf, &r) != 0 || !k->correct(&r))
            fail_msg("%s after allocation %llu failed%s: the server no longer answers correctly: %d %.300s",
                     k->name, (unsigned long long)n, persistent ? " (persistently)" : "", r.status,
                     r.body ? r.body : "");
    }
    stop(&rs);
    if (osv_alloc_live() != live)
        fail_msg("%s, allocation %llu failing%s: %lld allocation(s) not freed", k->name,
                 (unsigned long long)n, persistent ? " (persistently)" : "",
                 (long long)(osv_alloc_live() - live));
    return injected;
}

static void sqlite_loop(const kind_t *k)
{
    char *req = malloc(RESP_MAX), *buf = malloc(RESP_MAX);
    assert_non_null(req);
    assert_non_null(buf);
    for (int persistent = 0; persistent <= 1; persistent++) {
        uint64_t n;
        n_right = n_503 = 0;
        for (n = 1; n <= MAX_N; n++)
            if (run_once(k, n, persistent, req, buf) == 0)
                break;
        if (n > MAX_N)
            fail_msg("%s: still failing after %d injected allocation failures", k->name, MAX_N);
        print_message("%-20s %s: %3llu allocation points failed: %3u right answer, %3u 503\n", k->name,
                      persistent ? "persistent" : "once      ", (unsigned long long)(n - 1), n_right, n_503);
        if (n == 1)
            fail_msg("%s makes no allocation at all: the test exercises nothing", k->name);
    }
    free(req);
    free(buf);
}

static void test_kind(void **state)
{
    sqlite_loop(*state);
}

/* ---- set-up ------------------------------------------------------------------------------------------ */

static int setup(void **state)
{
    char path[512];
    osv_err_t err;
    (void)state;
    osv_log_init(OSV_LOG_OFF, true, 2);
    osv_obs_opts_t oo = {.access_log = false, .service_name = "test", .loops = 1};
    if (osv_obs_init(&oo, &err) != 0)
        return -1;
    osv_test_tmpdir(repo_dir, sizeof repo_dir);
    osv_test_copy_file(osv_test_model("mlp.onnx", path, sizeof path), repo_dir, "mlp/1/model.onnx");
    osv_test_copy_file(osv_test_model("scale2x.onnx", path, sizeof path), repo_dir, "scale2x/1/model.onnx");
    osv_test_copy_file(osv_test_model("fail.onnx", path, sizeof path), repo_dir, "fail/1/model.onnx");
    osv_server_opts_default(&sopts);
    sopts.host = "127.0.0.1";
    sopts.port = 0;
    sopts.loops = 1;
    sopts.workers = 1;
    sopts.deadline_ms = 0;
    sopts.max_connections = 64;
    sopts.pool.total_bytes = 16ull << 20;
    sopts.pool.max_slot = 1ull << 20;
    osv_repo_opts_t ro = {.env = osv_test_env(),
                          .path = repo_dir,
                          .load_all = true,
                          .hook = osv_server_model_hook,
                          .hook_ud = &sopts};
    osv_limits_default(&ro.limits);
    OSV_ASSERT_OK(osv_repo_open(&ro, &repo, &err), &err);
    osv_server_opts_t wide = sopts; /* a port beyond 16 bits is refused, not truncated (70000 -> 4464) */
    osv_server_t *none = NULL;
    wide.port = 70000;
    if (osv_server_create(&wide, osv_test_env(), repo, &none, &err) != OSV_EINVAL || none)
        return -1;

    /* Inputs, and the baseline answer of the JSON infer (nothing injected). */
    size_t pos = (size_t)snprintf(
        mlp_json, sizeof mlp_json,
        "{\"id\":\"f\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[");
    for (int i = 0; i < 64; i++)
        pos += (size_t)snprintf(mlp_json + pos, sizeof mlp_json - pos, "%s%d.%02d", i ? "," : "", (i % 7) - 3,
                                i);
    snprintf(mlp_json + pos, sizeof mlp_json - pos, "]}]}");
    for (int i = 0; i < SCALE_N; i++)
        scale_in[i] = (float)i * 0.25f - 100.0f;
    snprintf(shm_key, sizeof shm_key, "/osv-test-fault-%ld", (long)getpid());
    int fd = shm_open(shm_key, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, SHM_BYTES) != 0)
        return -1;
    close(fd);

    char *req = malloc(RESP_MAX), *buf = malloc(RESP_MAX);
    running_t rs;
    resp_t r;
    size_t len;
    b_infer_json(req, RESP_MAX, &len);
    start(&rs, &kinds[2]);
    int rc = exchange(rs.s->port, req, len, buf, &r);
    if (rc == 0 && r.status == 200 && r.body_len < sizeof mlp_expected)
        snprintf(mlp_expected, sizeof mlp_expected, "%.*s", (int)r.body_len, r.body);
    stop(&rs);
    free(req);
    free(buf);
    return mlp_expected[0] ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    osv_repo_close(repo);
    osv_obs_shutdown();
    shm_unlink(shm_key);
    osv_test_rmtree(repo_dir);
    return 0;
}

int main(void)
{
    struct CMUnitTest tests[sizeof kinds / sizeof *kinds];
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        tests[i] = (struct CMUnitTest){kinds[i].name, test_kind, NULL, NULL, (void *)&kinds[i]};
    return cmocka_run_group_tests(tests, setup, teardown);
}
