/* imaging_bench.c — image decoding + preprocessing and the classify endpoint. Prints figures;
 * asserts nothing (see docs/BENCHMARKS.md, "Imaging").
 *
 *   imaging_bench [--image FILE.jpg] [--iters N] [--seconds S] [--conc LIST] [--ortserve BIN]
 *                 [--model FILE.onnx] [--only preprocess|throughput]
 *
 * 1. preprocess: one 1920x1080 JPEG (a synthetic photo-like image, or --image) into one 224x224 FP32
 *    NCHW slot (ImageNet: short side 256, center crop 224, mean/std), pinned to one core: p50/p90/
 *    p99 of the whole call, and of its parts measured separately: the header, the TurboJPEG decode
 *    at the scale chosen, the same decode at full scale (what DCT scaling saves), libexif on a
 *    camera-sized APP1, and a 1920x1080 PNG for comparison.
 * 2. throughput: the PaddleOCR orientation model on one 320x48 text-line JPEG, at equal concurrency:
 *    in process (T threads, each osv_img_classify: decode + preprocess + Run) against the HTTP
 *    classify endpoint of a real `ortserve serve` (T keep-alive connections, one image per POST).
 *    Rounds alternate in-process and HTTP; the table shows medians over rounds, with the serving
 *    side's CPU time per image (this process in process; the server process over HTTP), which a
 *    shared machine's other load does not inflate the way it inflates wall-clock rates. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "imaging/imaging_internal.h" /* osv_img_exif_orientation, to time libexif alone */
#include "ortserve.h"
#include "ortserve/imaging.h"

#ifndef OSV_BENCH_ORTSERVE
#define OSV_BENCH_ORTSERVE "build/release/ortserve"
#endif

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return (double)v[i ? i - 1 : 0];
}

static void die(const char *what, const osv_err_t *err)
{
    fprintf(stderr, "imaging_bench: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

/* ---- test images ------------------------------------------------------------------------------------ */

/* A photo-like RGB image: gradients, blobs, edges, and sensor-like noise (so the entropy decoder has
 * realistic work; a flat synthetic image would decode unrealistically fast). */
static uint8_t *photo(int w, int h, uint32_t seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    uint32_t s = seed;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1664525u + 1013904223u;
            double n = ((double)(s >> 8) / 16777216.0 - 0.5) * 24;
            double r = 128 + 90 * sin(x / 37.0) * cos(y / 23.0), g = 255.0 * (x + y) / (w + h),
                   b = ((x / 61 + y / 47) % 2) ? 200 : 50;
            double dx = x - w * 0.6, dy = y - h * 0.45;
            if (dx * dx / 9.0 + dy * dy / 4.0 < 250.0 * 250.0)
                r = 230, g = 180 + 40 * sin(x / 5.0), b = 60;
            double v[3] = {r + n, g + n * 0.8, b + n * 1.2};
            for (int c = 0; c < 3; c++)
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)(v[c] < 0 ? 0 : v[c] > 255 ? 255 : v[c]);
        }
    return p;
}

static uint8_t *jpeg_of(const uint8_t *rgb, int w, int h, int quality, unsigned long *len)
{
    tjhandle t = tjInitCompress();
    unsigned char *out = NULL;
    if (tjCompress2(t, rgb, w, 0, h, TJPF_RGB, &out, len, TJSAMP_420, quality, 0) != 0)
        die("tjCompress2", NULL);
    tjDestroy(t);
    return out;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *b;
    if (!f || fstat(fileno(f), &st) != 0 || !(b = malloc((size_t)st.st_size)) ||
        fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        die(path, NULL);
    fclose(f);
    *len = (size_t)st.st_size;
    return b;
}

/* A PNG through libspng's encoder would need its API in the bench; a stored (uncompressed) zlib
 * stream is enough for timing the decoder's inflate + unfilter + our resampling. Filter byte 1 (Sub)
 * on every row, as real encoders often choose. */
static uint32_t crc_table[256];
static uint32_t crc(const uint8_t *p, size_t n, uint32_t c)
{
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t v = i;
            for (int k = 0; k < 8; k++)
                v = v & 1 ? 0xedb88320u ^ (v >> 1) : v >> 1;
            crc_table[i] = v;
        }
    c = ~c;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint8_t *png_of(const uint8_t *rgb, int w, int h, size_t *len)
{
    size_t row = (size_t)w * 3 + 1, raw = row * h, blocks = (raw + 65534) / 65535;
    size_t zlen = 2 + raw + blocks * 5 + 4, cap = 8 + 25 + 12 + zlen + 12;
    uint8_t *o = malloc(cap), *z, *q;
    uint32_t a = 1, b = 0;
    memcpy(o, "\x89PNG\r\n\x1a\n", 8);
    put32(o + 8, 13);
    memcpy(o + 12, "IHDR", 4);
    put32(o + 16, (uint32_t)w);
    put32(o + 20, (uint32_t)h);
    memcpy(o + 24, "\x08\x02\x00\x00\x00", 5);
    put32(o + 29, crc(o + 12, 17, 0));
    put32(o + 33, (uint32_t)zlen);
    memcpy(o + 37, "IDAT", 4);
    z = q = o + 41;
    *q++ = 0x78, *q++ = 0x01;
    uint8_t *filtered = malloc(raw);
    for (int y = 0; y < h; y++) {
        uint8_t *f = filtered + (size_t)y * row;
        const uint8_t *s = rgb + (size_t)y * w * 3;
        f[0] = 1;
        for (int i = 0; i < w * 3; i++)
            f[1 + i] = (uint8_t)(s[i] - (i >= 3 ? s[i - 3] : 0));
    }
    for (size_t off = 0; off < raw;) {
        size_t n = raw - off < 65535 ? raw - off : 65535;
        *q++ = off + n == raw;
        *q++ = (uint8_t)n, *q++ = (uint8_t)(n >> 8), *q++ = (uint8_t)~n, *q++ = (uint8_t)(~n >> 8);
        memcpy(q, filtered + off, n);
        for (size_t i = 0; i < n; i++) {
            a = (a + filtered[off + i]) % 65521;
            b = (b + a) % 65521;
        }
        q += n;
        off += n;
    }
    put32(q, b << 16 | a);
    q += 4;
    put32(q, crc(z - 4, (size_t)(q - z) + 4, 0));
    q += 4;
    put32(q, 0);
    memcpy(q + 4, "IEND", 4);
    put32(q + 8, crc(q + 4, 4, 0));
    q += 12;
    free(filtered);
    *len = (size_t)(q - o);
    return o;
}

/* A real photograph shipped by Debian's python3-matplotlib (in `tools/deps.sh bench`), 512x600,
 * cropped to 16:9 and resized to 1920x1080 with ortserve's own resampler, then encoded at q90: photo
 * statistics (smooth regions, edges) at the benchmark's size. NULL when the file is missing. */
#define REAL_PHOTO "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
static uint8_t *real_photo_1080(size_t *len)
{
    static const char spec_json[] = "{\"height\":1080,\"width\":1920,\"resize\":\"crop\",\"dtype\":\"UINT8\","
                                    "\"layout\":\"NHWC\",\"resize_short\":1920}";
    osv_img_spec_t spec;
    osv_img_ctx_t *ctx;
    osv_err_t err;
    size_t n;
    FILE *f = fopen(REAL_PHOTO, "rb");
    if (!f)
        return NULL;
    fclose(f);
    uint8_t *src = read_file(REAL_PHOTO, &n), *rgb = malloc(1920 * 1080 * 3), *jpg = NULL;
    unsigned long l = 0;
    if (osv_img_spec_parse(spec_json, sizeof spec_json - 1, NULL, &spec, &err) == 0 &&
        osv_img_ctx_create(&ctx, &err) == 0) {
        if (osv_img_preprocess(ctx, &spec, src, n, rgb, 1920 * 1080 * 3, NULL, &err) == 0)
            jpg = jpeg_of(rgb, 1920, 1080, 90, &l);
        osv_img_ctx_destroy(ctx);
    }
    free(src);
    free(rgb);
    *len = l;
    return jpg;
}

/* ---- 1. preprocess ------------------------------------------------------------------------------------ */

static void pin_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

typedef struct timing {
    const char *name;
    uint64_t *v;
    int n;
} timing_t;

static void report(const char *name, uint64_t *v, int n)
{
    printf("  %-58s p50 %8.3f ms   p90 %8.3f   p99 %8.3f\n", name, pct(v, (size_t)n, 50) / 1e6,
           pct(v, (size_t)n, 90) / 1e6, pct(v, (size_t)n, 99) / 1e6);
}

static void bench_preprocess(const uint8_t *jpg, size_t jlen, int iters, const char *what)
{
    static const char spec_json[] = "{\"height\":224,\"width\":224,\"resize\":\"crop\",\"resize_short\":256,"
                                    "\"mean\":[0.485,0.456,0.406],\"std\":[0.229,0.224,0.225]}";
    osv_img_spec_t spec, full;
    osv_img_ctx_t *ctx;
    osv_img_info_t info;
    osv_err_t err;
    int w, h, ss, cs;
    if (osv_img_spec_parse(spec_json, sizeof spec_json - 1, NULL, &spec, &err) != 0 ||
        osv_img_ctx_create(&ctx, &err))
        die("setup", &err);
    full = spec;
    full.jpeg_dct_scale = false;
    uint64_t bytes = osv_img_tensor_bytes(&spec);
    void *dst = aligned_alloc(64, (bytes + 63) & ~(uint64_t)63);
    uint64_t *t[8];
    for (int k = 0; k < 8; k++)
        t[k] = calloc((size_t)iters, sizeof(uint64_t));
    tjhandle tj = tjInitDecompress();
    tjDecompressHeader3(tj, jpg, jlen, &w, &h, &ss, &cs);
    if (osv_img_preprocess(ctx, &spec, jpg, jlen, dst, bytes, &info, &err) != 0)
        die("preprocess", &err);
    int sw = (int)info.decoded_width, sh = (int)info.decoded_height;
    uint8_t *pix = malloc((size_t)w * h * 3);
    size_t plen;
    uint8_t *rgb = photo(w, h, 7);
    uint8_t *png = png_of(rgb, w, h, &plen);
    free(rgb);
    /* A camera-like APP1: Exif header + a TIFF IFD0 with Orientation and 40 filler entries. */
    uint8_t app1[2048];
    size_t al = 0;
    memcpy(app1, "Exif\0\0II*\0\x08\0\0\0", 14);
    al = 14;
    uint16_t ne = 41;
    memcpy(app1 + al, &ne, 2);
    al += 2;
    for (uint16_t e = 0; e < ne; e++) {
        uint16_t tag = e == 0 ? 0x0112 : (uint16_t)(0x010e + e), type = 3;
        uint32_t cnt = 1, val = e == 0 ? 6 : e;
        memcpy(app1 + al, &tag, 2), memcpy(app1 + al + 2, &type, 2), memcpy(app1 + al + 4, &cnt, 4);
        memcpy(app1 + al + 8, &val, 4);
        al += 12;
    }
    memset(app1 + al, 0, 4);
    al += 4;

    printf("\n1. decode + preprocess: %dx%d JPEG (%zu bytes, %.2f bits/pixel; %s)\n"
           "   -> 224x224 FP32 NCHW slot, one core (cpu 0)\n",
           w, h, jlen, 8.0 * (double)jlen / ((double)w * h), what);
    printf("   ImageNet preprocessing: short side 256 (torchvision), center crop 224, mean/std; "
           "DCT scale chosen 1/%u (decoded %dx%d)\n",
           w / sw, sw, sh);
    pin_cpu(0);
    for (int i = 0; i < 20; i++)
        osv_img_preprocess(ctx, &spec, jpg, jlen, dst, bytes, NULL, &err);
    uint64_t allocs0 = osv_alloc_count();
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        osv_img_preprocess(ctx, &spec, jpg, jlen, dst, bytes, NULL, &err);
        uint64_t t1 = now_ns();
        tjDecompress2(tj, jpg, jlen, pix, sw, 0, sh, TJPF_RGB, 0);
        uint64_t t2 = now_ns();
        osv_img_probe(ctx, jpg, jlen, NULL, &info, &err);
        uint64_t t3 = now_ns();
        t[0][i] = t1 - t0;
        t[1][i] = t2 - t1;
        t[2][i] = t3 - t2;
    }
    uint64_t allocs = osv_alloc_count() - allocs0;
    int few = iters / 4 > 20 ? iters / 4 : iters;
    for (int i = 0; i < few; i++) {
        uint64_t t0 = now_ns();
        osv_img_preprocess(ctx, &full, jpg, jlen, dst, bytes, NULL, &err);
        uint64_t t1 = now_ns();
        tjDecompress2(tj, jpg, jlen, pix, w, 0, h, TJPF_RGB, 0);
        uint64_t t2 = now_ns();
        osv_img_preprocess(ctx, &spec, png, plen, dst, bytes, NULL, &err);
        uint64_t t3 = now_ns();
        t[3][i] = t1 - t0;
        t[4][i] = t2 - t1;
        t[5][i] = t3 - t2;
    }
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        uint32_t o = 0;
        for (int r = 0; r < 10; r++) /* the internal helper the JPEG and PNG decoders call */
            o += osv_img_exif_orientation(app1, al);
        t[6][i] = (now_ns() - t0) / 10;
        (void)o;
    }
    report("osv_img_preprocess (header+decode+EXIF+resize+normalize)", t[0], iters);
    report("  of which: TurboJPEG decode at the chosen scale alone", t[1], iters);
    report("  of which: header + marker scan (osv_img_probe)", t[2], iters);
    report("  libexif: orientation of a 41-entry APP1", t[6], iters);
    report("same JPEG, DCT scaling off (full 1920x1080 decode)", t[3], few);
    report("  of which: TurboJPEG full-scale decode alone", t[4], few);
    report("1920x1080 PNG (RGB8, Sub filter, stored deflate) -> same slot", t[5], few);
    printf("  ortserve heap allocations in %d steady-state calls: %" PRIu64 "\n", iters, allocs);
    for (int k = 0; k < 8; k++)
        free(t[k]);
    free(pix);
    free(png);
    free(dst);
    tjDestroy(tj);
    osv_img_ctx_destroy(ctx);
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE && c < 256; c++)
        CPU_SET(c, &all);
    sched_setaffinity(0, sizeof all, &all);
}

/* ---- 2. throughput --------------------------------------------------------------------------------------
 */

typedef struct load {
    osv_model_t *m;
    osv_pool_t *pool;
    const uint8_t *img;
    size_t len;
    uint16_t port;
    uint64_t until;
    _Atomic uint64_t done, errors;
    uint64_t *lat; /* per thread: latencies */
    _Atomic uint32_t nlat;
    uint32_t cap;
} load_t;

static void note_lat(load_t *L, uint64_t ns)
{
    uint32_t i = atomic_fetch_add(&L->nlat, 1);
    if (i < L->cap)
        L->lat[i] = ns;
}

static void *inproc_thread(void *arg)
{
    load_t *L = arg;
    osv_img_ctx_t *ctx;
    osv_err_t err;
    osv_img_class_t out[2];
    uint32_t k, failed;
    osv_img_blob_t b = {L->img, L->len};
    osv_img_classify_opts_t o = {.pool = L->pool, .top_k = 2};
    if (osv_img_ctx_create(&ctx, &err) != 0)
        die("ctx", &err);
    while (now_ns() < L->until) {
        uint64_t t0 = now_ns();
        if (osv_img_classify(ctx, L->m, &b, 1, &o, out, &k, &failed, &err) != 0)
            atomic_fetch_add(&L->errors, 1);
        else
            atomic_fetch_add(&L->done, 1);
        note_lat(L, now_ns() - t0);
    }
    osv_img_ctx_destroy(ctx);
    return NULL;
}

static int connect_port(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One keep-alive connection: POST, read the head and Content-Length bytes, repeat. */
static void *http_thread(void *arg)
{
    load_t *L = arg;
    char head[256], buf[8192];
    int fd = connect_port(L->port);
    int hl = snprintf(
        head, sizeof head,
        "POST /v2/models/text_orientation/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        "Content-Length: %zu\r\n\r\n",
        L->len);
    if (fd < 0)
        die("connect", NULL);
    while (now_ns() < L->until) {
        uint64_t t0 = now_ns();
        struct iovec v[2] = {{head, (size_t)hl}, {(void *)L->img, L->len}};
        if (writev(fd, v, 2) != (ssize_t)(hl + L->len))
            die("writev", NULL);
        size_t got = 0;
        long need = -1;
        int status = 0;
        for (;;) {
            ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
            if (n <= 0)
                die("read", NULL);
            got += (size_t)n;
            buf[got] = 0;
            char *e = strstr(buf, "\r\n\r\n");
            if (e && need < 0) {
                char *cl = strcasestr(buf, "Content-Length:");
                status = atoi(buf + 9);
                need = (long)(e + 4 - buf) + (cl ? atol(cl + 15) : 0);
            }
            if (need >= 0 && (long)got >= need)
                break;
        }
        atomic_fetch_add(status == 200 ? &L->done : &L->errors, 1);
        note_lat(L, now_ns() - t0);
    }
    close(fd);
    return NULL;
}

/* CPU seconds used so far: this process (pid 0) or another one (from /proc/<pid>/stat). */
static double cpu_seconds(pid_t pid)
{
    if (pid == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t server_pid;

/* Requests per second (wall clock); *cpu_us = CPU microseconds per request of the serving side
 * (this process for in-process runs, the server process for HTTP runs), which the machine's other
 * load does not inflate the way it inflates wall-clock rates. */
static double run_load(load_t *L, int conc, double seconds, bool http, double *p50, double *cpu_us)
{
    pthread_t th[64];
    double c0 = cpu_seconds(http ? server_pid : 0);
    atomic_store(&L->done, 0);
    atomic_store(&L->errors, 0);
    atomic_store(&L->nlat, 0);
    uint64_t t0 = now_ns();
    L->until = t0 + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < conc; i++)
        pthread_create(&th[i], NULL, http ? http_thread : inproc_thread, L);
    for (int i = 0; i < conc; i++)
        pthread_join(th[i], NULL);
    double el = (double)(now_ns() - t0) / 1e9;
    uint64_t done = atomic_load(&L->done);
    *cpu_us = done ? (cpu_seconds(http ? server_pid : 0) - c0) * 1e6 / (double)done : 0;
    uint32_t n = atomic_load(&L->nlat) < L->cap ? atomic_load(&L->nlat) : L->cap;
    *p50 = n ? pct(L->lat, n, 50) / 1e6 : 0;
    if (atomic_load(&L->errors))
        fprintf(stderr, "imaging_bench: %" PRIu64 " errors\n", atomic_load(&L->errors));
    return (double)atomic_load(&L->done) / el;
}

static pid_t start_server(const char *bin, const char *repo, uint16_t *port)
{
    char port_file[512];
    snprintf(port_file, sizeof port_file, "%s/port", repo);
    unlink(port_file);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "serve", "--model-repository", repo, "--port", "0", "--port-file", port_file,
              "--log-level", "error", "--deadline-ms", "0", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600; i++) { /* up to 30 s */
        FILE *f = fopen(port_file, "r");
        unsigned p = 0;
        if (f && fscanf(f, "%u", &p) == 1 && p) {
            fclose(f);
            *port = (uint16_t)p;
            return pid;
        }
        if (f)
            fclose(f);
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
    die("server did not start", NULL);
    return -1;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        die(path, NULL);
}

static void bench_throughput(const char *model_file, const char *bin, double seconds, const int *concs,
                             int nconc)
{
    static const char config[] = "{\"labels\":\"labels.txt\",\"image\":{\"height\":48,\"width\":192,"
                                 "\"resize\":\"paddle_ocr\",\"color\":\"BGR\","
                                 "\"mean\":0.5,\"std\":0.5},\"postprocess\":{\"top_k\":2}}";
    char repo[] = "/tmp/osv-imgbench-XXXXXX", path[600], cmd[1400];
    osv_env_t *env;
    osv_env_opts_t eo;
    osv_repo_t *r;
    osv_err_t err;
    load_t L = {.cap = 1u << 20};
    if (!mkdtemp(repo))
        die("mkdtemp", NULL);
    snprintf(path, sizeof path, "%s/text_orientation/1", repo);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s' '%s/model.onnx'", path, model_file, path);
    if (system(cmd) != 0)
        die("copying the model", NULL);
    snprintf(path, sizeof path, "%s/text_orientation/config.json", repo);
    write_text(path, config);
    snprintf(path, sizeof path, "%s/text_orientation/labels.txt", repo);
    write_text(path, "0\n180\n");

    /* A 320x48 text-line-like image: dark strokes on a light background. */
    int w = 320, h = 48;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bool ink =
                y > 12 && y < 36 && (x % 23 < 3 || (y > 22 && y < 26 && x % 23 < 14)) && x > 8 && x < 300;
            for (int c = 0; c < 3; c++)
                rgb[((size_t)y * w + x) * 3 + c] = ink ? 30 : 235;
        }
    unsigned long jl;
    L.img = jpeg_of(rgb, w, h, 90, &jl);
    L.len = jl;
    free(rgb);
    L.lat = calloc(L.cap, sizeof *L.lat);

    osv_env_opts_default(&eo);
    osv_pool_opts_t po = {.total_bytes = 256ull << 20};
    osv_img_limits_t lim;
    osv_img_limits_default(&lim);
    osv_repo_opts_t ro = {.path = repo, .load_all = true};
    if (osv_env_create(&eo, &env, &err) != 0)
        die("env", &err);
    ro.env = env;
    osv_limits_default(&ro.limits);
    if (osv_repo_open(&ro, &r, &err) != 0 ||
        osv_repo_acquire(r, "text_orientation", 16, -1, &L.m, &err) != 0 ||
        osv_img_model_attach(L.m, &lim, &err) != 0 || osv_pool_create(&po, &L.pool, &err) != 0)
        die("model", &err);
    pid_t srv = start_server(bin, repo, &L.port);
    server_pid = srv;

    printf("\n2. classify throughput: text_orientation (PaddleOCR cls, [N,3,48,192]) on one %dx%d JPEG (%zu "
           "bytes),\n"
           "   one image per call/request, %.1f s per run, in-process and HTTP alternating; medians of 3 "
           "rounds\n",
           w, h, L.len, seconds);
    printf("   %-5s  %12s %8s %9s  %12s %8s %9s  %11s %11s\n", "conc", "in-proc/s", "p50 ms", "CPU us",
           "HTTP req/s", "p50 ms", "CPU us", "rate ratio", "CPU ratio");
    for (int ci = 0; ci < nconc; ci++) {
        double a[3], b[3], pa[3], pb[3], ca[3], cb[3], p;
        for (int round = 0; round < 3; round++) {
            if (round % 2 == 0) {
                a[round] = run_load(&L, concs[ci], seconds, false, &pa[round], &ca[round]);
                b[round] = run_load(&L, concs[ci], seconds, true, &pb[round], &cb[round]);
            } else {
                b[round] = run_load(&L, concs[ci], seconds, true, &pb[round], &cb[round]);
                a[round] = run_load(&L, concs[ci], seconds, false, &pa[round], &ca[round]);
            }
        }
        double ra[3] = {b[0] / a[0], b[1] / a[1], b[2] / a[2]},
               rc[3] = {cb[0] / ca[0], cb[1] / ca[1], cb[2] / ca[2]};
#define MED3(v)                                                                                              \
    ((v)[0] > (v)[1] ? ((v)[1] > (v)[2]   ? (v)[1]                                                           \
                        : (v)[0] > (v)[2] ? (v)[2]                                                           \
                                          : (v)[0])                                                          \
                     : ((v)[0] > (v)[2]   ? (v)[0]                                                           \
                        : (v)[1] > (v)[2] ? (v)[2]                                                           \
                                          : (v)[1]))
        p = MED3(ra);
        printf("   %-5d  %12.0f %8.3f %9.0f  %12.0f %8.3f %9.0f  %10.2fx %10.2fx\n", concs[ci], MED3(a),
               MED3(pa), MED3(ca), MED3(b), MED3(pb), MED3(cb), p, MED3(rc));
    }
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    osv_model_release(L.m);
    osv_repo_close(r);
    osv_pool_destroy(L.pool);
    osv_env_destroy(env);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", repo);
    if (system(cmd) != 0)
        fprintf(stderr, "imaging_bench: could not remove %s\n", repo);
    free(L.lat);
    tjFree((unsigned char *)L.img);
}

int main(int argc, char **argv)
{
    const char *image = NULL, *bin = OSV_BENCH_ORTSERVE,
               *model = "third_party/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", *only = NULL;
    int iters = 300, concs[8] = {1, 2, 4}, nconc = 3;
    double seconds = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--image") && i + 1 < argc)
            image = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--ortserve") && i + 1 < argc)
            bin = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--conc") && i + 1 < argc) {
            nconc = 0;
            for (char *s = strtok(argv[++i], ","); s && nconc < 8; s = strtok(NULL, ","))
                concs[nconc++] = atoi(s) > 0 && atoi(s) <= 64 ? atoi(s) : 1;
        } else {
            fprintf(stderr,
                    "usage: imaging_bench [--image FILE.jpg] [--iters N] [--seconds S] [--conc 1,2,4] "
                    "[--ortserve BIN] [--model FILE.onnx] [--only preprocess|throughput]\n");
            return 2;
        }
    }
    if (iters < 10)
        iters = 10;
    signal(SIGPIPE, SIG_IGN);
    printf("imaging_bench: %ld cores, TurboJPEG (libjpeg-turbo) + libspng + libexif\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    if (!only || !strcmp(only, "preprocess")) {
        size_t jlen;
        uint8_t *jpg;
        if (image) {
            jpg = read_file(image, &jlen);
            bench_preprocess(jpg, jlen, iters, image);
            free(jpg);
        } else {
            if ((jpg = real_photo_1080(&jlen))) {
                bench_preprocess(jpg, jlen, iters,
                                 "a real photo (" REAL_PHOTO ") upscaled to 1920x1080, q90");
                tjFree(jpg);
            }
            uint8_t *rgb = photo(1920, 1080, 1);
            unsigned long l;
            jpg = jpeg_of(rgb, 1920, 1080, 90, &l);
            free(rgb);
            bench_preprocess(jpg, l, iters, "synthetic, sensor-like noise (high entropy), q90");
            tjFree(jpg);
        }
    }
    if (!only || !strcmp(only, "throughput"))
        bench_throughput(model, bin, seconds, concs, nconc);
    return 0;
}
