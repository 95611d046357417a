/* core_run.c — in-process benchmark of ortserve's core run path. Prints figures; asserts nothing.
 *
 *   core_run [--models DIR] [--quick] [--large] [--json FILE] [--only mlp|mobilenet|copy|threads]
 *
 * 1. Overhead per call of the full ortserve path (osv_infer_init → add_input → input_external →
 *    prepare → run → output_view → fini, storage reused, one pool) against a bare ORT Run, for the
 *    MLP (x FP32[1,64]) and the MobileNetV2-shaped model (FP32[1,3,224,224]).
 * 2. Zero-copy against forced copy (osv_infer_opts_t.force_copy) on scale2x.onnx at 64 KiB, 1 MiB
 *    and 16 MiB inputs (64 MiB with --large): latency, bytes copied, minor page faults, peak RSS.
 * 3. Heap allocations per steady-state call: ortserve's own (osv_alloc_count) and every malloc in
 *    the process, ORT's included (malloc & co are interposed below).
 * 4. (--only threads; not in the default run) ORT thread settings under the server's load shapes:
 *    six env/session thread configurations, each in its own child process (core_run re-executed with
 *    a hidden flag: one ORT environment per process), driven block by block from this process.
 *
 * The machine is assumed shared and noisy, so compared variants run in interleaved blocks (round r
 * runs A B C, round r+1 runs C B A, ...). Each block's per-call latencies give a p50 and a p99; the
 * tables show the median over rounds. Allocation counting is switched on only in untimed passes. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/model_internal.h"
#include "ortserve/alloc.h"
#include "ortserve/infer.h"
#include "ortserve/pool.h"

/* ---- Allocation counting: every malloc-family call in the process goes through here ---------------- */

/* The project builds with -fvisibility=hidden: without this the definitions below would not be exported
 * and ORT (and libstdc++'s operator new) would keep calling glibc's. */
#define INTERPOSE __attribute__((visibility("default")))

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *ptr);

static _Atomic int count_on;
static _Atomic uint64_t n_alloc, n_free, n_alloc_bytes;

static inline void note_alloc(size_t size)
{
    if (atomic_load_explicit(&count_on, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&n_alloc_bytes, size, memory_order_relaxed);
    }
}

INTERPOSE void *malloc(size_t size)
{
    note_alloc(size);
    return __libc_malloc(size);
}

INTERPOSE void *calloc(size_t count, size_t size)
{
    note_alloc(count * size);
    return __libc_calloc(count, size);
}

INTERPOSE void *realloc(void *ptr, size_t size)
{
    note_alloc(size);
    return __libc_realloc(ptr, size);
}

INTERPOSE void *memalign(size_t align, size_t size)
{
    note_alloc(size);
    return __libc_memalign(align, size);
}

INTERPOSE void *aligned_alloc(size_t align, size_t size)
{
    note_alloc(size);
    return __libc_memalign(align, size);
}

INTERPOSE int posix_memalign(void **out, size_t align, size_t size)
{
    void *p;
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    note_alloc(size);
    if (!(p = __libc_memalign(align, size)))
        return ENOMEM;
    *out = p;
    return 0;
}

INTERPOSE void free(void *ptr)
{
    if (ptr && atomic_load_explicit(&count_on, memory_order_relaxed))
        atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
    __libc_free(ptr);
}

/* ---- Small utilities ------------------------------------------------------------------------------ */

#define MAX_ROUNDS   32
#define MAX_VARIANTS 5
#define MAX_SECTIONS 8
#define MAX_SAMPLES  200000

static volatile float sink; /* keeps every output observed */

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("core_run: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void ort_ok(OrtStatus *st, const char *what)
{
    if (st)
        die("%s: %s", what, osv_ort->GetErrorMessage(st));
}

static void osv_ok(int rc, const osv_err_t *err, const char *what)
{
    if (rc)
        die("%s: %s (%s)", what, err->msg, osv_err_name(rc));
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t pct(const uint64_t *sorted, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    return sorted[r ? r - 1 : 0];
}

static double median(const double *v, int n)
{
    double t[MAX_ROUNDS];
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_dbl);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static void min_max(const double *v, int n, double *lo, double *hi)
{
    *lo = *hi = v[0];
    for (int i = 1; i < n; i++) {
        *lo = v[i] < *lo ? v[i] : *lo;
        *hi = v[i] > *hi ? v[i] : *hi;
    }
}

static void *xalloc(size_t size)
{
    void *p = aligned_alloc(64, (size + 63) & ~(size_t)63);
    if (!p)
        die("out of memory (%zu bytes)", size);
    return p;
}

static void fill_f32(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)(i * 37 % 101) - 50) / 25.0f;
}

static const char *human_bytes(uint64_t b, char *buf, size_t cap)
{
    if (b >= (1u << 20))
        snprintf(buf, cap, "%g MiB", (double)b / (1u << 20));
    else
        snprintf(buf, cap, "%g KiB", (double)b / 1024);
    return buf;
}

/* Resident set size now, in KiB (from /proc/self/statm). */
static long rss_now_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* ---- Options -------------------------------------------------------------------------------------- */

typedef struct options {
    const char *models;
    const char *json;
    const char *only; /* NULL = everything */
    int quick, large;
    int child, child_cfg, child_rfd, child_wfd; /* hidden --threads-child CFG:RFD:WFD (section 4) */
    char command[1024];
} options_t;

static void usage(FILE *f)
{
    fputs("usage: core_run [--models DIR] [--quick] [--large] [--json FILE] "
          "[--only mlp|mobilenet|copy|threads]\n"
          "  --models DIR  generated models (default var/models; tools/gen_models.py --out DIR)\n"
          "  --quick       ~10 s smoke run (fewer rounds, shorter blocks)\n"
          "  --large       add the 64 MiB input to the copy comparison\n"
          "  --json FILE   also write every figure to FILE\n"
          "  --only NAME   run one section: mlp, mobilenet, copy, or threads (ORT thread settings,\n"
          "                ~2.5-3 min, ~25 s with --quick; only run when asked for)\n",
          f);
}

static void parse_args(int argc, char **argv, options_t *o)
{
    size_t used = 0;
    memset(o, 0, sizeof *o);
    o->models = "var/models";
    for (int i = 0; i < argc; i++)
        used += (size_t)snprintf(o->command + used, used < sizeof o->command ? sizeof o->command - used : 0,
                                 "%s%s", i ? " " : "", argv[i]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--quick"))
            o->quick = 1;
        else if (!strcmp(a, "--large"))
            o->large = 1;
        else if (!strcmp(a, "--models") && has_value)
            o->models = argv[++i];
        else if (!strcmp(a, "--json") && has_value)
            o->json = argv[++i];
        else if (!strcmp(a, "--only") && has_value)
            o->only = argv[++i];
        else if (!strcmp(a, "--threads-child") && has_value) { /* internal: section 4's child */
            if (sscanf(argv[++i], "%d:%d:%d", &o->child_cfg, &o->child_rfd, &o->child_wfd) != 3)
                die("bad --threads-child value '%s'", argv[i]);
            o->child = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else {
            usage(stderr);
            exit(2);
        }
    }
    if (o->only && strcmp(o->only, "mlp") && strcmp(o->only, "mobilenet") && strcmp(o->only, "copy") &&
        strcmp(o->only, "threads"))
        die("--only takes mlp, mobilenet, copy or threads, not '%s'", o->only);
}

/* Section 4 (threads) takes minutes, so it runs only when asked for by name. */
static int wanted(const options_t *o, const char *section)
{
    return o->only ? !strcmp(o->only, section) : strcmp(section, "threads") != 0;
}

static void model_path(const options_t *o, const char *file, char *buf, size_t cap)
{
    struct stat st;
    snprintf(buf, cap, "%s/%s", o->models, file);
    if (stat(buf, &st) != 0)
        die("%s: not found (generate the models: /usr/bin/python3 tools/gen_models.py --out %s)", buf,
            o->models);
}

static void thr_check_models(const options_t *o); /* section 4 */

/* Fails early, with the command that generates them, when a model the run needs is missing. */
static void check_models(const options_t *o)
{
    char path[4096];
    if (wanted(o, "mlp"))
        model_path(o, "mlp.onnx", path, sizeof path);
    if (wanted(o, "mobilenet"))
        model_path(o, "mobilenetv2.onnx", path, sizeof path);
    if (wanted(o, "copy"))
        model_path(o, "scale2x.onnx", path, sizeof path);
    if (wanted(o, "threads"))
        thr_check_models(o);
}

/* ---- Measurement engine: variants, interleaved rounds, allocation counting ------------------------ */

typedef struct block {
    double p50, p99; /* ns per call */
    double minflt;   /* minor page faults per call */
} block_t;

typedef struct variant {
    const char *name;
    void (*call)(void *ctx); /* one call; exits on error */
    void *ctx;
    const uint64_t *last_copied; /* bytes ortserve copied in the last call, or NULL (bare ORT) */
    double warm_mean_ns;
    block_t blk[MAX_ROUNDS];
    /* Counting pass, per call. */
    double allocs, frees, alloc_bytes, osv_allocs, copied;
} variant_t;

typedef struct plan {
    int rounds;
    uint64_t warm_ns, block_ns;
    size_t min_calls, count_calls;
} plan_t;

typedef struct section {
    char name[32];
    char title[160];
    variant_t v[MAX_VARIANTS];
    int nv;
    int rounds;
    size_t calls;       /* per block */
    size_t count_calls; /* in the counting pass */
    uint64_t bytes;     /* copy sections: input size */
    long rss_base_kib[2], rss_peak_kib[2];
} section_t;

static uint64_t *samples; /* one block's latencies */

static void warm(variant_t *v, uint64_t budget_ns)
{
    uint64_t t0 = now_ns(), t = t0;
    size_t n = 0;
    while (n < 3 || t - t0 < budget_ns) {
        v->call(v->ctx);
        n++;
        t = now_ns();
    }
    v->warm_mean_ns = (double)(t - t0) / (double)n;
}

static void run_block(variant_t *v, size_t k, block_t *out)
{
    struct rusage r0, r1;
    uint64_t t;
    getrusage(RUSAGE_SELF, &r0);
    t = now_ns();
    for (size_t i = 0; i < k; i++) {
        uint64_t t1;
        v->call(v->ctx);
        t1 = now_ns();
        samples[i] = t1 - t;
        t = t1;
    }
    getrusage(RUSAGE_SELF, &r1);
    qsort(samples, k, sizeof *samples, cmp_u64);
    out->p50 = (double)pct(samples, k, 0.50);
    out->p99 = (double)pct(samples, k, 0.99);
    out->minflt = (double)(r1.ru_minflt - r0.ru_minflt) / (double)k;
}

/* Counts allocations over n steady-state calls (untimed). */
static void count_pass(variant_t *v, size_t n)
{
    uint64_t a0, f0, b0, o0, copied = 0;
    v->call(v->ctx);
    a0 = atomic_load(&n_alloc);
    f0 = atomic_load(&n_free);
    b0 = atomic_load(&n_alloc_bytes);
    o0 = osv_alloc_count();
    atomic_store(&count_on, 1);
    for (size_t i = 0; i < n; i++) {
        v->call(v->ctx);
        copied += v->last_copied ? *v->last_copied : 0;
    }
    atomic_store(&count_on, 0);
    v->allocs = (double)(atomic_load(&n_alloc) - a0) / (double)n;
    v->frees = (double)(atomic_load(&n_free) - f0) / (double)n;
    v->alloc_bytes = (double)(atomic_load(&n_alloc_bytes) - b0) / (double)n;
    v->osv_allocs = (double)(osv_alloc_count() - o0) / (double)n;
    v->copied = (double)copied / (double)n;
}

/* Warm-up, block size from the slowest variant, interleaved rounds, then the counting passes. */
static void measure(section_t *s, const plan_t *p)
{
    double slowest = 1;
    size_t k;
    for (int i = 0; i < s->nv; i++) {
        warm(&s->v[i], p->warm_ns);
        slowest = s->v[i].warm_mean_ns > slowest ? s->v[i].warm_mean_ns : slowest;
    }
    k = (size_t)((double)p->block_ns / slowest);
    k = k < p->min_calls ? p->min_calls : k > MAX_SAMPLES ? MAX_SAMPLES : k;
    s->calls = k;
    s->rounds = p->rounds;
    for (int r = 0; r < p->rounds; r++) {
        for (int j = 0; j < s->nv; j++) {
            int i = r % 2 ? s->nv - 1 - j : j;
            run_block(&s->v[i], k, &s->v[i].blk[r]);
        }
    }
    s->count_calls = p->count_calls;
    for (int i = 0; i < s->nv; i++)
        count_pass(&s->v[i], p->count_calls);
}

static void col(const variant_t *v, int rounds, size_t off, double *out)
{
    for (int r = 0; r < rounds; r++)
        out[r] = *(const double *)((const char *)&v->blk[r] + off);
}

static double med_p50(const variant_t *v, int rounds)
{
    double a[MAX_ROUNDS] = {0};
    col(v, rounds, offsetof(block_t, p50), a);
    return median(a, rounds);
}

static double med_p99(const variant_t *v, int rounds)
{
    double a[MAX_ROUNDS] = {0};
    col(v, rounds, offsetof(block_t, p99), a);
    return median(a, rounds);
}

static double med_minflt(const variant_t *v, int rounds)
{
    double a[MAX_ROUNDS] = {0};
    col(v, rounds, offsetof(block_t, minflt), a);
    return median(a, rounds);
}

enum { DIFF, RATIO, ABSDIFF };

/* Median over rounds of a − b, a / b or |a − b| (p50 or p99 per the offset), with the range. */
static double paired(const variant_t *a, const variant_t *b, int rounds, size_t off, int mode, double *lo,
                     double *hi)
{
    double x[MAX_ROUNDS] = {0}, y[MAX_ROUNDS] = {0}, d[MAX_ROUNDS] = {0};
    col(a, rounds, off, x);
    col(b, rounds, off, y);
    for (int r = 0; r < rounds; r++)
        d[r] = mode == RATIO ? x[r] / y[r] : mode == ABSDIFF ? fabs(x[r] - y[r]) : x[r] - y[r];
    min_max(d, rounds, lo, hi);
    return median(d, rounds);
}

/* ---- The benchmark's state ---------------------------------------------------------------------- */

typedef struct bench {
    options_t opt;
    osv_env_t *env;
    osv_pool_t *pool;
    section_t sec[MAX_SECTIONS];
    int nsec;
    double timer_ns;
    uint64_t hook_allocs; /* seen while ORT created its environment: 0 = the hook is not active */
    struct thr_run *thr;  /* section 4's results, when it ran */
} bench_t;

static section_t *new_section(bench_t *b, const char *name)
{
    section_t *s = &b->sec[b->nsec++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

static void add_variant(section_t *s, const char *name, void (*call)(void *), void *ctx,
                        const uint64_t *copied)
{
    variant_t *v = &s->v[s->nv++];
    v->name = name;
    v->call = call;
    v->ctx = ctx;
    v->last_copied = copied;
}

/* ---- Variants: the ortserve path ------------------------------------------------------------------ */

typedef struct osv_ctx {
    osv_model_t *m;
    osv_infer_opts_t opts;
    void *mem;
    size_t size;
    void *x;
    uint64_t x_bytes;
    int64_t dims[OSV_MAX_DIMS];
    uint32_t rank;
    uint64_t copied;
} osv_ctx_t;

/* One request through ortserve's path; returns the first output element. */
static float osv_run_once(osv_ctx_t *c)
{
    osv_infer_t *inf;
    float y;
    osv_tensor_view_t v;
    osv_err_t err;
    int rc = osv_infer_init(c->mem, c->size, c->m, &c->opts, &inf, &err);
    if (!rc)
        rc = osv_infer_add_input(inf, 0, OSV_DTYPE_FP32, c->dims, c->rank, 0, &err);
    if (!rc)
        rc = osv_infer_input_external(inf, 0, c->x, c->x_bytes, &err);
    if (!rc)
        rc = osv_infer_prepare(inf, &err);
    if (!rc)
        rc = osv_infer_run(inf, &err);
    if (!rc)
        rc = osv_infer_output_view(inf, 0, &v, &err);
    osv_ok(rc, &err, "ortserve run path");
    y = *(const float *)v.data;
    c->copied = osv_infer_copied(inf);
    osv_infer_fini(inf);
    return y;
}

static void osv_call(void *arg)
{
    sink = osv_run_once(arg);
}

static void osv_ctx_init(osv_ctx_t *c, osv_model_t *m, osv_pool_t *pool, bool force, void *x,
                         uint64_t x_bytes, const int64_t *dims, uint32_t rank)
{
    memset(c, 0, sizeof *c);
    c->m = m;
    c->opts.pool = pool;
    c->opts.force_copy = force;
    c->size = osv_infer_size(m);
    c->mem = xalloc(c->size);
    c->x = x;
    c->x_bytes = x_bytes;
    c->rank = rank;
    memcpy(c->dims, dims, rank * sizeof *dims);
}

/* ---- Variants: bare ORT --------------------------------------------------------------------------- */

typedef struct bare_ctx {
    OrtSession *session;
    const char *const *in_names, *const *out_names;
    const OrtMemoryInfo *mi;
    ONNXTensorElementDataType type;
    void *x, *y;
    size_t x_bytes, y_bytes;
    int64_t xdims[OSV_MAX_DIMS], ydims[OSV_MAX_DIMS];
    size_t xrank, yrank;
    OrtValue *xv, *yv; /* created once */
    OrtRunOptions *ro; /* created once, reused like ortserve's per-thread run options */
} bare_ctx_t;

/* Input and output OrtValues created once over user buffers; Run writes into the output buffer. */
static void bare_prebound(void *arg)
{
    bare_ctx_t *c = arg;
    ort_ok(osv_ort->Run(c->session, NULL, c->in_names, (const OrtValue *const *)&c->xv, 1, c->out_names, 1,
                        &c->yv),
           "bare Run");
    sink = *(const float *)c->y;
}

/* The same with an OrtRunOptions created once instead of NULL. */
static void bare_prebound_ro(void *arg)
{
    bare_ctx_t *c = arg;
    ort_ok(osv_ort->Run(c->session, c->ro, c->in_names, (const OrtValue *const *)&c->xv, 1, c->out_names, 1,
                        &c->yv),
           "bare Run");
    sink = *(const float *)c->y;
}

/* Input created once; ORT allocates the output (NULL output value), which is read and released. */
static void bare_ort_alloc(void *arg)
{
    bare_ctx_t *c = arg;
    OrtValue *out = NULL;
    void *p;
    ort_ok(osv_ort->Run(c->session, NULL, c->in_names, (const OrtValue *const *)&c->xv, 1, c->out_names, 1,
                        &out),
           "bare Run");
    ort_ok(osv_ort->GetTensorMutableData(out, &p), "output data");
    sink = *(const float *)p;
    osv_ort->ReleaseValue(out);
}

/* Reference: the ORT calls ortserve makes per request — both OrtValues created over the buffers, Run
 * with a reused OrtRunOptions, values released — without ortserve's own code. */
static void bare_per_call(void *arg)
{
    bare_ctx_t *c = arg;
    OrtValue *in = NULL, *out = NULL;
    ort_ok(osv_ort->CreateTensorWithDataAsOrtValue(c->mi, c->x, c->x_bytes, c->xdims, c->xrank, c->type, &in),
           "input value");
    ort_ok(
        osv_ort->CreateTensorWithDataAsOrtValue(c->mi, c->y, c->y_bytes, c->ydims, c->yrank, c->type, &out),
        "output value");
    ort_ok(
        osv_ort->Run(c->session, c->ro, c->in_names, (const OrtValue *const *)&in, 1, c->out_names, 1, &out),
        "bare Run");
    sink = *(const float *)c->y;
    osv_ort->ReleaseValue(in);
    osv_ort->ReleaseValue(out);
}

/* Concrete dims of a model tensor: dynamic dims become 1. Returns the element count. */
static size_t concrete_dims(const osv_tensor_info_t *t, int64_t *dims)
{
    size_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) {
        dims[d] = t->dims[d] < 0 ? 1 : t->dims[d];
        n *= (size_t)dims[d];
    }
    return n;
}

static void bare_ctx_init(bare_ctx_t *c, const osv_env_t *env, const osv_model_t *m, void *x)
{
    const osv_tensor_info_t *ti = osv_model_input(m, 0), *to = osv_model_output(m, 0);
    memset(c, 0, sizeof *c);
    c->session = m->session;
    c->in_names = m->in_names;
    c->out_names = m->out_names;
    c->mi = env->cpu_info;
    c->type = (ONNXTensorElementDataType)ti->ort_type;
    c->x = x;
    c->x_bytes = concrete_dims(ti, c->xdims) * sizeof(float);
    c->xrank = (size_t)ti->rank;
    c->y_bytes = concrete_dims(to, c->ydims) * sizeof(float);
    c->yrank = (size_t)to->rank;
    c->y = xalloc(c->y_bytes);
    ort_ok(
        osv_ort->CreateTensorWithDataAsOrtValue(c->mi, c->x, c->x_bytes, c->xdims, c->xrank, c->type, &c->xv),
        "input value");
    ort_ok(
        osv_ort->CreateTensorWithDataAsOrtValue(c->mi, c->y, c->y_bytes, c->ydims, c->yrank, c->type, &c->yv),
        "output value");
    ort_ok(osv_ort->CreateRunOptions(&c->ro), "run options");
}

static void bare_ctx_free(bare_ctx_t *c)
{
    osv_ort->ReleaseRunOptions(c->ro);
    osv_ort->ReleaseValue(c->xv);
    osv_ort->ReleaseValue(c->yv);
    free(c->y);
}

static osv_model_t *load_model(bench_t *b, const char *name, const char *file)
{
    char path[4096];
    osv_model_t *m;
    osv_err_t err;
    model_path(&b->opt, file, path, sizeof path);
    osv_ok(osv_model_load(b->env, name, 1, path, NULL, NULL, &m, &err), &err, path);
    return m;
}

/* ---- Section 1: run-path overhead ------------------------------------------------------------------ */

enum { V_BARE_PRE, V_BARE_PRE_RO, V_BARE_ALLOC, V_BARE_PERCALL, V_OSV };

/* The fastest of the bare variants a user would write (values created once), by median p50. */
static const variant_t *best_bare(const section_t *s)
{
    const variant_t *best = &s->v[V_BARE_PRE];
    for (int i = V_BARE_PRE_RO; i <= V_BARE_ALLOC; i++)
        if (med_p50(&s->v[i], s->rounds) < med_p50(best, s->rounds))
            best = &s->v[i];
    return best;
}

/* One input OrtValue created over the buffer and released: what ORT allocates for a value. */
static void value_create_release(void *arg)
{
    bare_ctx_t *c = arg;
    OrtValue *v = NULL;
    ort_ok(osv_ort->CreateTensorWithDataAsOrtValue(c->mi, c->x, c->x_bytes, c->xdims, c->xrank, c->type, &v),
           "input value");
    osv_ort->ReleaseValue(v);
}

/* Attributes the malloc difference between the bare and ortserve rows to ORT calls. */
static void print_alloc_attribution(const section_t *s, bare_ctx_t *bare)
{
    variant_t v = {.name = "value", .call = value_create_release, .ctx = bare};
    count_pass(&v, 1000);
    printf("  ORT's own mallocs: CreateTensorWithDataAsOrtValue+ReleaseValue %.0f per value; "
           "Run(NULL run options) %+.0f vs a reused OrtRunOptions\n",
           v.allocs, s->v[V_BARE_PRE].allocs - s->v[V_BARE_PRE_RO].allocs);
    printf("  mallocs per call: bare prebound %.0f, ORT calls of ortserve's path %.0f, ortserve %.0f; "
           "osv_malloc per call %.2f\n",
           s->v[V_BARE_PRE_RO].allocs, s->v[V_BARE_PERCALL].allocs, s->v[V_OSV].allocs,
           s->v[V_OSV].osv_allocs);
}

static void print_overhead(const section_t *s, double target_ns)
{
    const variant_t *best = best_bare(s), *o = &s->v[V_OSV], *pc = &s->v[V_BARE_PERCALL];
    const variant_t *n1 = &s->v[V_BARE_PRE], *n2 = &s->v[V_BARE_PRE_RO];
    double lo, hi, lo99, hi99, rlo, rhi, plo, phi, nlo, nhi;
    double d50 = paired(o, best, s->rounds, offsetof(block_t, p50), DIFF, &lo, &hi);
    double d99 = paired(o, best, s->rounds, offsetof(block_t, p99), DIFF, &lo99, &hi99);
    double ratio = paired(o, best, s->rounds, offsetof(block_t, p50), RATIO, &rlo, &rhi);
    double dpc = paired(o, pc, s->rounds, offsetof(block_t, p50), DIFF, &plo, &phi);
    double noise = paired(n1, n2, s->rounds, offsetof(block_t, p50), ABSDIFF, &nlo, &nhi);
    int slower = 0;

    for (int r = 0; r < s->rounds; r++)
        slower += o->blk[r].p50 > best->blk[r].p50;

    printf("  overhead ortserve − best bare (%s), median of per-round differences [min..max]; "
           "ortserve slower in %d/%d rounds:\n",
           best->name, slower, s->rounds);
    printf("    p50 %+.0f ns [%+.0f..%+.0f]   p99 %+.0f ns [%+.0f..%+.0f]   ratio p50 %.3f× [%.3f..%.3f]\n",
           d50, lo, hi, d99, lo99, hi99, ratio, rlo, rhi);
    printf("  ortserve − \"%s\" = ortserve's own code: p50 %+.0f ns [%+.0f..%+.0f]\n", pc->name, dpc, plo,
           phi);
    printf("  noise floor: the two prebound bare variants (same work ± 1 malloc) differ by |%.0f| ns p50 "
           "per round (median; max %.0f)\n",
           noise, nhi);
    if (fabs(d50) <= noise || (slower < 0.8 * s->rounds && slower > 0.2 * s->rounds))
        printf("  (not resolved here: the difference is within the noise floor or its sign is not consistent "
               "across rounds)\n");
    if (target_ns > 0)
        printf("  target ≤ %.0f ns per call: %s (%+.0f ns vs target)\n", target_ns,
               d50 <= target_ns ? "MET" : "MISSED", d50 - target_ns);
}

static void print_latency_table(const section_t *s, double unit, const char *uname)
{
    int prec = unit > 1 ? 1 : 0;
    char h50[16], h99[16];
    snprintf(h50, sizeof h50, "p50 %s", uname);
    snprintf(h99, sizeof h99, "p99 %s", uname);
    printf("  %-40s %10s %10s %23s %12s\n", "variant", h50, h99, "p50 min..max (rounds)", "minflt/call");
    for (int i = 0; i < s->nv; i++) {
        const variant_t *v = &s->v[i];
        double a[MAX_ROUNDS] = {0}, lo, hi;
        char range[48];
        col(v, s->rounds, offsetof(block_t, p50), a);
        min_max(a, s->rounds, &lo, &hi);
        snprintf(range, sizeof range, "%.*f..%.*f", prec, lo / unit, prec, hi / unit);
        printf("  %-40s %10.*f %10.*f %23s %12.3f\n", v->name, prec, med_p50(v, s->rounds) / unit, prec,
               med_p99(v, s->rounds) / unit, range, med_minflt(v, s->rounds));
    }
}

static void section_net(bench_t *b, const char *name, const char *file, const plan_t *p, double target_ns,
                        double unit, const char *uname)
{
    osv_model_t *m = load_model(b, name, file);
    const osv_tensor_info_t *ti = osv_model_input(m, 0), *to = osv_model_output(m, 0);
    section_t *s = new_section(b, name);
    bare_ctx_t bare;
    osv_ctx_t osv;
    int64_t dims[OSV_MAX_DIMS], odims[OSV_MAX_DIMS];
    size_t n = concrete_dims(ti, dims);
    float *x = xalloc(n * sizeof *x);
    char ds[96], os[96];

    fill_f32(x, n);
    concrete_dims(to, odims);
    bare_ctx_init(&bare, b->env, m, x);
    osv_ctx_init(&osv, m, b->pool, false, x, n * sizeof *x, dims, (uint32_t)ti->rank);
    add_variant(s, "bare: prebound in+out, NULL run opts", bare_prebound, &bare, NULL);
    add_variant(s, "bare: prebound in+out, reused run opts", bare_prebound_ro, &bare, NULL);
    add_variant(s, "bare: prebound in, ORT-allocated out", bare_ort_alloc, &bare, NULL);
    add_variant(s, "ref: ortserve's ORT calls, no ortserve", bare_per_call, &bare, NULL);
    add_variant(s, "ortserve: init..fini per call", osv_call, &osv, &osv.copied);
    snprintf(s->title, sizeof s->title, "%s  %s FP32%s -> %s FP32%s", file, ti->name,
             osv_shape_str(dims, ti->rank, ds, sizeof ds), to->name,
             osv_shape_str(odims, to->rank, os, sizeof os));
    measure(s, p);

    printf("\n%s\n  %d rounds × %zu calls per variant (interleaved); per call, timer included\n", s->title,
           s->rounds, s->calls);
    print_latency_table(s, unit, uname);
    print_overhead(s, target_ns);
    print_alloc_attribution(s, &bare);
    bare_ctx_free(&bare);
    free(osv.mem);
    free(x);
    osv_model_release(m);
}

/* ---- Section 2: zero-copy vs forced copy ---------------------------------------------------------- */

static const uint64_t copy_sizes[] = {64u << 10, 1u << 20, 16u << 20, 64u << 20};

static size_t n_copy_sizes(const options_t *o)
{
    return o->large ? 4 : 3;
}

static osv_pool_t *make_pool(int large)
{
    /* 4 KiB · 4^i up to 64 MiB (256 MiB with --large: a forced 64 MiB run holds input + output). */
    uint32_t counts[OSV_POOL_MAX_CLASSES];
    osv_pool_opts_t o = {.min_slot = 4096, .max_slot = large ? 256ull << 20 : 64ull << 20, .growth = 4};
    osv_pool_t *pool;
    osv_err_t err;
    for (int i = 0; i < OSV_POOL_MAX_CLASSES; i++)
        counts[i] = 1;
    o.counts = counts;
    o.n_counts = OSV_POOL_MAX_CLASSES;
    o.total_bytes = large ? 512ull << 20 : 128ull << 20;
    osv_ok(osv_pool_create(&o, &pool, &err), &err, "pool");
    return pool;
}

typedef struct rss_probe {
    long base_kib, peak_kib;
} rss_probe_t;

/* Child process body: a fresh environment, one variant only, reports RSS before and peak after. */
static void rss_child(const options_t *o, uint64_t bytes, bool force, int fd)
{
    char path[4096];
    osv_env_t *env;
    osv_model_t *m;
    osv_err_t err;
    osv_ctx_t c;
    rss_probe_t r;
    int64_t dims[1] = {(int64_t)(bytes / sizeof(float))};
    float *x = xalloc(bytes);

    fill_f32(x, bytes / sizeof(float));
    osv_ok(osv_env_create(NULL, &env, &err), &err, "env");
    model_path(o, "scale2x.onnx", path, sizeof path);
    osv_ok(osv_model_load(env, "scale2x", 1, path, NULL, NULL, &m, &err), &err, path);
    osv_ctx_init(&c, m, make_pool(o->large), force, x, bytes, dims, 1);
    r.base_kib = rss_now_kib();
    for (int i = 0; i < 10; i++)
        osv_call(&c);
    r.peak_kib = peak_rss_kib();
    if (rss_now_kib() > r.peak_kib) /* the kernel's RSS counters are approximate */
        r.peak_kib = rss_now_kib();
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(1);
    _exit(0);
}

/* Peak RSS of one variant in isolation: fork before the parent loads ORT. */
static void rss_probe(const options_t *o, uint64_t bytes, bool force, long *base, long *peak)
{
    int fds[2], status;
    rss_probe_t r = {0, 0};
    pid_t pid;
    fflush(stdout);
    if (pipe(fds) != 0 || (pid = fork()) < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        rss_child(o, bytes, force, fds[1]);
    }
    close(fds[1]);
    if (read(fds[0], &r, sizeof r) != (ssize_t)sizeof r)
        r.base_kib = r.peak_kib = -1;
    close(fds[0]);
    waitpid(pid, &status, 0);
    *base = r.base_kib;
    *peak = r.peak_kib;
}

static void section_copy(bench_t *b, osv_model_t *m, uint64_t bytes, const plan_t *p, const long *rss_base,
                         const long *rss_peak)
{
    section_t *s = new_section(b, "copy");
    osv_ctx_t zc, fc;
    int64_t dims[1] = {(int64_t)(bytes / sizeof(float))};
    float *x = xalloc(bytes);
    char hb[32];

    fill_f32(x, bytes / sizeof(float));
    osv_ctx_init(&zc, m, b->pool, false, x, bytes, dims, 1);
    osv_ctx_init(&fc, m, b->pool, true, x, bytes, dims, 1);
    add_variant(s, "zero-copy", osv_call, &zc, &zc.copied);
    add_variant(s, "forced copy", osv_call, &fc, &fc.copied);
    s->bytes = bytes;
    snprintf(s->name, sizeof s->name, "copy_%s", human_bytes(bytes, hb, sizeof hb));
    for (char *q = s->name; *q; q++)
        *q = *q == ' ' ? '_' : *q;
    snprintf(s->title, sizeof s->title, "scale2x.onnx  x FP32[%" PRId64 "] (%s) -> y", dims[0], hb);
    for (int i = 0; i < 2; i++) {
        s->rss_base_kib[i] = rss_base[i];
        s->rss_peak_kib[i] = rss_peak[i];
    }
    measure(s, p);
    free(zc.mem);
    free(fc.mem);
    free(x);
}

static void print_copy_table(bench_t *b)
{
    printf("\n  %-9s %-12s %10s %10s %13s %12s %15s\n", "input", "variant", "p50 µs", "p99 µs",
           "copied B/call", "minflt/call", "peak RSS (Δ) MiB");
    for (int i = 0; i < b->nsec; i++) {
        const section_t *s = &b->sec[i];
        char hb[32];
        if (strncmp(s->name, "copy_", 5) != 0)
            continue;
        for (int j = 0; j < s->nv; j++) {
            const variant_t *v = &s->v[j];
            char rss[40] = "n/a (probe failed)";
            if (s->rss_peak_kib[j] >= 0)
                snprintf(rss, sizeof rss, "%7.1f (%+.1f)", (double)s->rss_peak_kib[j] / 1024,
                         (double)(s->rss_peak_kib[j] - s->rss_base_kib[j]) / 1024);
            printf("  %-9s %-12s %10.1f %10.1f %13.0f %12.3f %s\n",
                   j ? "" : human_bytes(s->bytes, hb, sizeof hb), v->name, med_p50(v, s->rounds) / 1e3,
                   med_p99(v, s->rounds) / 1e3, v->copied, med_minflt(v, s->rounds), rss);
        }
    }
    printf("\n  %-9s %-30s %-30s %s\n", "input", "forced/zero p50 [min..max]", "forced/zero p99 [min..max]",
           "target zero-copy ≥ 1.3× faster at 16 MiB");
    for (int i = 0; i < b->nsec; i++) {
        const section_t *s = &b->sec[i];
        double lo, hi, lo99, hi99, r50, r99;
        char hb[32], a[40], c[40];
        if (strncmp(s->name, "copy_", 5) != 0)
            continue;
        r50 = paired(&s->v[1], &s->v[0], s->rounds, offsetof(block_t, p50), RATIO, &lo, &hi);
        r99 = paired(&s->v[1], &s->v[0], s->rounds, offsetof(block_t, p99), RATIO, &lo99, &hi99);
        snprintf(a, sizeof a, "%.2f× [%.2f..%.2f]", r50, lo, hi);
        snprintf(c, sizeof c, "%.2f× [%.2f..%.2f]", r99, lo99, hi99);
        printf("  %-9s %-30s %-30s %s\n", human_bytes(s->bytes, hb, sizeof hb), a, c,
               s->bytes == (16u << 20) ? (r50 >= 1.3 ? "MET" : "MISSED") : "");
    }
}

/* ---- Section 3: allocations ---------------------------------------------------------------------- */

static void print_alloc_table(const bench_t *b)
{
    printf("\n== 3. Heap allocations per steady-state call "
           "(untimed counting pass after the timed rounds) ==\n");
    printf("  malloc-family = malloc+calloc+realloc+memalign+aligned_alloc+posix_memalign, "
           "whole process (ORT's included)\n");
    printf("  %-14s %6s %-38s %14s %10s %14s %16s\n", "section", "calls", "variant", "malloc-family", "free",
           "bytes", "osv_malloc &co");
    for (int i = 0; i < b->nsec; i++) {
        const section_t *s = &b->sec[i];
        for (int j = 0; j < s->nv; j++) {
            const variant_t *v = &s->v[j];
            char calls[24] = "";
            if (!j)
                snprintf(calls, sizeof calls, "%zu", s->count_calls);
            printf("  %-14s %6s %-38s %14.2f %10.2f %14.0f %16.2f\n", j ? "" : s->name, calls, v->name,
                   v->allocs, v->frees, v->alloc_bytes, v->osv_allocs);
        }
    }
}

/* ---- Section 4: ORT thread settings under the server's load shapes -------------------------------- */

/* One ORT environment per process, so each configuration lives in its own child: core_run re-executes
 * itself with --threads-child CFG:RFD:WFD, creates that environment, loads the three models, and then
 * runs one measurement block per command read from the parent. Only one child works at a time; the
 * others wait in read(). The parent interleaves the configurations (a..f, then f..a) within every
 * (model, load) cell, as sections 1 and 2 interleave their variants. */
typedef struct thr_cfg {
    const char *key, *label, *tag; /* tag: the short form the tables use */
    bool global;                   /* osv_env_opts_t.global_thread_pools (the pool's size is intra) */
    int intra, spin;               /* threads.intra_op and threads.spinning; inter_op is 1 throughout */
} thr_cfg_t;

static const thr_cfg_t thr_cfgs[] = {
    {"a", "per-session, intra_op=1, spin off", "session 1", false, 1, 0}, /* ortserve's default */
    {"b", "per-session, intra_op=2, spin off", "session 2", false, 2, 0},
    {"c", "per-session, intra_op=2, spin on", "session 2 spin", false, 2, 1},
    {"d", "global pools, 2 threads, spin off", "global 2", true, 2, 0},
    {"e", "global pools, 2 threads, spin on", "global 2 spin", true, 2, 1},
    {"f", "per-session, intra_op=0 (ORT), spin on", "session 0 spin", false, 0, 1}, /* ORT's defaults */
};
#define THR_CFGS ((int)(sizeof thr_cfgs / sizeof thr_cfgs[0]))

typedef struct thr_model {
    const char *file, *dir; /* dir NULL = --models */
    int64_t dims[4];
    uint32_t rank;
    uint64_t block_ms; /* latency and throughput blocks; bursty blocks take THR_BURSTY_MS */
    int prec;          /* decimals of the µs figures */
} thr_model_t;

static const thr_model_t thr_models[] = {
    {"mlp.onnx", NULL, {1, 64}, 2, 150, 2},
    {"ch_ppocr_mobile_v2.0_cls_infer.onnx", "third_party/models", {1, 3, 48, 192}, 4, 250, 0},
    {"mobilenetv2.onnx", NULL, {1, 3, 224, 224}, 4, 500, 0},
};
#define THR_MODELS ((int)(sizeof thr_models / sizeof thr_models[0]))

enum { L_LATENCY, L_THROUGHPUT, L_BURSTY, THR_LOADS };
static const char *const thr_load_names[THR_LOADS] = {"latency", "throughput", "bursty"};
static const char *const thr_load_desc[THR_LOADS] = {"1 caller, back to back",
                                                     "2 callers at once on the same session (the 2 workers)",
                                                     "1 caller, 2 ms pause between calls (pause not timed)"};

#define THR_BURSTY_MS 400
#define THR_PAUSE_NS  2000000L
#define THR_MIN_CALLS 10
#define THR_NOISY     0.5 /* cores busy elsewhere during a block that make its cell measured again */

static void thr_model_path(const options_t *o, int i, char *buf, size_t cap)
{
    struct stat st;
    const thr_model_t *tm = &thr_models[i];
    if (!tm->dir) {
        model_path(o, tm->file, buf, cap);
        return;
    }
    snprintf(buf, cap, "%s/%s", tm->dir, tm->file);
    if (stat(buf, &st) != 0)
        die("%s: not found (run core_run from the repository root; tools/deps.sh fetches it)", buf);
}

static void thr_check_models(const options_t *o)
{
    char path[4096];
    for (int i = 0; i < THR_MODELS; i++)
        thr_model_path(o, i, path, sizeof path);
}

/* Messages on the pipes (same binary on both ends). */
typedef struct thr_cmd {
    int op; /* 1 = run a block, 0 = quit */
    int model, load;
    uint64_t block_ns;
} thr_cmd_t;

typedef struct thr_ready {
    int threads;    /* the child's threads after loading (its main thread included, no second caller) */
    double load_ms; /* environment + 3 sessions + warm-up */
} thr_ready_t;

typedef struct thr_block {
    double p50, p99; /* ns per call */
    double rps;      /* calls / wall time of the block */
    double cpu_run;  /* ns of process CPU (utime+stime, all threads) per call, spin-down included */
    double cores;    /* CPU during the block / wall time */
    double tail_ms;  /* CPU burnt after the last call returned (pool threads spinning down) */
    double others;   /* cores busy outside this process during the block (/proc/stat; noise gauge) */
    double calls;
} thr_block_t;

static void xwrite(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("pipe write: %s", strerror(errno));
        c += w;
        n -= (size_t)w;
    }
}

/* 1 when n bytes were read, 0 at end of file before the first byte. */
static int xread(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("pipe read: %s", strerror(errno));
        if (r == 0) {
            if (!got)
                return 0;
            die("pipe read: truncated message");
        }
        got += (size_t)r;
    }
    return 1;
}

static double cpu_now_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Machine-wide busy CPU time (every CPU, steal included) from /proc/stat, in seconds. */
static double machine_busy_s(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                       &v[5], &v[6], &v[7])
              : 0;
    if (f)
        fclose(f);
    if (n < 8)
        return 0;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static int proc_threads(void)
{
    char line[256];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* ---- Section 4, child side ---- */

typedef struct thr_caller {
    osv_ctx_t ctx[THR_MODELS]; /* own infer storage per model; the input buffer is shared, read-only */
    uint64_t *lat;
    size_t n;
    uint64_t t_end;
    float out;
} thr_caller_t;

typedef struct thr_child {
    thr_caller_t *k[2]; /* the main thread's and the helper's (separate allocations: no false sharing) */
    pthread_barrier_t go, done;
    pthread_t helper;
    int model, load, quit;
    uint64_t deadline;
} thr_child_t;

/* One caller's share of a block: until the deadline (at least THR_MIN_CALLS) or MAX_SAMPLES calls. */
static void thr_loop(thr_child_t *c, thr_caller_t *k)
{
    const struct timespec pause = {0, THR_PAUSE_NS};
    osv_ctx_t *x = &k->ctx[c->model];
    k->n = 0;
    for (;;) {
        uint64_t t0 = now_ns(), t1;
        k->out = osv_run_once(x);
        t1 = now_ns();
        k->lat[k->n++] = t1 - t0;
        k->t_end = t1;
        if (k->n == MAX_SAMPLES || (t1 >= c->deadline && k->n >= THR_MIN_CALLS))
            break;
        if (c->load == L_BURSTY)
            clock_nanosleep(CLOCK_MONOTONIC, 0, &pause, NULL);
    }
}

/* The second caller: a persistent thread, like a server worker. */
static void *thr_helper(void *arg)
{
    thr_child_t *c = arg;
    for (;;) {
        pthread_barrier_wait(&c->go);
        if (c->quit)
            return NULL;
        thr_loop(c, c->k[1]);
        pthread_barrier_wait(&c->done);
    }
}

/* Waits until the process is idle (< 0.5 ms of CPU in a 5 ms step; at most 300 ms): spinning ORT
 * pool threads go on for a while after the last Run returns. Returns the CPU time then. */
static double thr_settle(void)
{
    const struct timespec step = {0, 5000000};
    double prev = cpu_now_s();
    for (int i = 0; i < 60; i++) {
        double c;
        nanosleep(&step, NULL);
        c = cpu_now_s();
        if (c - prev < 0.0005)
            return c;
        prev = c;
    }
    return prev;
}

static void thr_block(thr_child_t *c, const thr_cmd_t *cmd, thr_block_t *out)
{
    int two = cmd->load == L_THROUGHPUT;
    thr_caller_t *k0 = c->k[0], *k1 = c->k[1];
    uint64_t t0, t_end, warm_end = now_ns() + 10000000;
    double cpu0, cpu1, cpu2, busy0, busy1, wall;
    size_t n;

    c->model = cmd->model;
    c->load = cmd->load;
    /* Untimed re-warm (10 ms, at least 2 calls): the other children ran since this one's last block. */
    for (int i = 0; i < 2 || now_ns() < warm_end; i++)
        k0->out = osv_run_once(&k0->ctx[c->model]);
    busy0 = machine_busy_s();
    cpu0 = cpu_now_s();
    t0 = now_ns();
    c->deadline = t0 + cmd->block_ns;
    if (two)
        pthread_barrier_wait(&c->go);
    thr_loop(c, k0);
    if (two)
        pthread_barrier_wait(&c->done);
    cpu1 = cpu_now_s();
    busy1 = machine_busy_s();
    cpu2 = thr_settle();

    n = k0->n;
    t_end = k0->t_end;
    if (two) {
        memcpy(k0->lat + n, k1->lat, k1->n * sizeof *k1->lat); /* k0->lat holds 2 × MAX_SAMPLES */
        n += k1->n;
        t_end = k1->t_end > t_end ? k1->t_end : t_end;
    }
    qsort(k0->lat, n, sizeof *k0->lat, cmp_u64);
    wall = (double)(t_end - t0) / 1e9;
    out->p50 = (double)pct(k0->lat, n, 0.50);
    out->p99 = (double)pct(k0->lat, n, 0.99);
    out->rps = (double)n / wall;
    out->cpu_run = (cpu2 - cpu0) * 1e9 / (double)n;
    out->cores = (cpu1 - cpu0) / wall;
    out->tail_ms = (cpu2 - cpu1) * 1e3;
    out->others = fmax(0, (busy1 - busy0) - (cpu1 - cpu0)) / wall; /* ticks: ±10 ms granularity */
    out->calls = (double)n;
}

static osv_pool_t *thr_pool(void)
{
    uint32_t counts[OSV_POOL_MAX_CLASSES];
    osv_pool_opts_t o = {.min_slot = 4096, .max_slot = 1u << 20, .growth = 4, .total_bytes = 16u << 20};
    osv_pool_t *pool;
    osv_err_t err;
    for (int i = 0; i < OSV_POOL_MAX_CLASSES; i++)
        counts[i] = 4;
    o.counts = counts;
    o.n_counts = OSV_POOL_MAX_CLASSES;
    osv_ok(osv_pool_create(&o, &pool, &err), &err, "pool");
    return pool;
}

/* The child's main: environment per its configuration, models loaded and warmed, then commands. */
static int thr_child_main(const options_t *o)
{
    const thr_cfg_t *cfg;
    osv_env_opts_t eo;
    osv_env_t *env;
    osv_err_t err;
    osv_model_t *m[THR_MODELS];
    float *x[THR_MODELS];
    osv_pool_t *pool;
    thr_child_t c;
    thr_ready_t ready;
    thr_cmd_t cmd;
    thr_block_t res;
    uint64_t t0 = now_ns();

    if (o->child_cfg < 0 || o->child_cfg >= THR_CFGS)
        die("--threads-child: no configuration %d", o->child_cfg);
    cfg = &thr_cfgs[o->child_cfg];
    osv_env_opts_default(&eo);
    eo.global_thread_pools = cfg->global;
    eo.threads.intra_op = cfg->intra;
    eo.threads.inter_op = 1;
    eo.threads.spinning = cfg->spin;
    osv_ok(osv_env_create(&eo, &env, &err), &err, "ONNX Runtime environment");
    pool = thr_pool();
    memset(&c, 0, sizeof c);
    for (int i = 0; i < 2; i++) {
        c.k[i] = xalloc(sizeof *c.k[i]);
        memset(c.k[i], 0, sizeof *c.k[i]);
        c.k[i]->lat = xalloc((i ? 1 : 2) * (size_t)MAX_SAMPLES * sizeof(uint64_t));
    }
    for (int j = 0; j < THR_MODELS; j++) {
        const thr_model_t *tm = &thr_models[j];
        char path[4096];
        size_t n = 1;
        uint64_t warm_end;
        thr_model_path(o, j, path, sizeof path);
        osv_ok(osv_model_load(env, tm->file, 1, path, NULL, NULL, &m[j], &err), &err, path);
        for (uint32_t d = 0; d < tm->rank; d++)
            n *= (size_t)tm->dims[d];
        x[j] = xalloc(n * sizeof(float));
        fill_f32(x[j], n);
        for (int i = 0; i < 2; i++)
            osv_ctx_init(&c.k[i]->ctx[j], m[j], pool, false, x[j], n * sizeof(float), tm->dims, tm->rank);
        warm_end = now_ns() + 100000000;
        for (int i = 0; i < 3 || now_ns() < warm_end; i++)
            c.k[0]->out = osv_run_once(&c.k[0]->ctx[j]);
    }
    ready.load_ms = (double)(now_ns() - t0) / 1e6;
    ready.threads = proc_threads();
    if (pthread_barrier_init(&c.go, NULL, 2) || pthread_barrier_init(&c.done, NULL, 2) ||
        pthread_create(&c.helper, NULL, thr_helper, &c))
        die("threads child: cannot start the second caller");
    xwrite(o->child_wfd, &ready, sizeof ready);
    while (xread(o->child_rfd, &cmd, sizeof cmd) && cmd.op == 1) {
        thr_block(&c, &cmd, &res);
        xwrite(o->child_wfd, &res, sizeof res);
    }
    c.quit = 1;
    pthread_barrier_wait(&c.go);
    pthread_join(c.helper, NULL);
    for (int j = 0; j < THR_MODELS; j++) {
        for (int i = 0; i < 2; i++)
            free(c.k[i]->ctx[j].mem);
        free(x[j]);
        osv_model_release(m[j]);
    }
    for (int i = 0; i < 2; i++) {
        free(c.k[i]->lat);
        free(c.k[i]);
    }
    osv_pool_destroy(pool);
    osv_env_destroy(env);
    return 0;
}

/* ---- Section 4, parent side ---- */

typedef struct thr_run {
    int rounds;
    int reruns, disturbed; /* cells measured again; cells still disturbed after that (or out of budget) */
    double seconds;
    pid_t pid[THR_CFGS];
    int cmd_fd[THR_CFGS], res_fd[THR_CFGS];
    thr_ready_t ready[THR_CFGS];
    thr_block_t blk[THR_MODELS][THR_LOADS][THR_CFGS][MAX_ROUNDS];
} thr_run_t;

static uint64_t thr_block_ns(const options_t *o, int model, int load)
{
    uint64_t ms = load == L_BURSTY ? THR_BURSTY_MS : thr_models[model].block_ms;
    return (o->quick ? ms / 3 : ms) * 1000000;
}

static void thr_spawn(thr_run_t *t, const options_t *o, int i)
{
    int cmd[2], res[2];
    char val[64], exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    pid_t pid;
    if (len <= 0)
        die("readlink /proc/self/exe: %s", strerror(errno));
    exe[len] = '\0';
    if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(res, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    snprintf(val, sizeof val, "%d:%d:%d", i, cmd[0], res[1]);
    fflush(stdout);
    fflush(stderr);
    if ((pid = fork()) < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) { /* only async-signal-safe calls until exec: the parent has ORT's threads */
        char *argv[] = {"core_run", "--threads-child", val, "--models", (char *)o->models, NULL};
        fcntl(cmd[0], F_SETFD, 0); /* these two survive the exec, every other pipe end does not */
        fcntl(res[1], F_SETFD, 0);
        execv(exe, argv);
        _exit(127);
    }
    close(cmd[0]);
    close(res[1]);
    t->pid[i] = pid;
    t->cmd_fd[i] = cmd[1];
    t->res_fd[i] = res[0];
}

static double thr_med(const thr_run_t *t, int m, int l, int i, size_t off)
{
    double a[MAX_ROUNDS];
    for (int r = 0; r < t->rounds; r++)
        a[r] = *(const double *)((const char *)&t->blk[m][l][i][r] + off);
    return median(a, t->rounds);
}

/* Median over rounds of config i's figure over config a's, with the range. */
static double thr_ratio(const thr_run_t *t, int m, int l, int i, size_t off, double *lo, double *hi)
{
    double a[MAX_ROUNDS];
    for (int r = 0; r < t->rounds; r++)
        a[r] = *(const double *)((const char *)&t->blk[m][l][i][r] + off) /
               *(const double *)((const char *)&t->blk[m][l][0][r] + off);
    min_max(a, t->rounds, lo, hi);
    return median(a, t->rounds);
}

static void thr_print(const thr_run_t *t, const options_t *o)
{
    for (int m = 0; m < THR_MODELS; m++) {
        const thr_model_t *tm = &thr_models[m];
        char ds[96];
        printf("\n%s  FP32%s  (blocks: ≥ %d calls and %" PRIu64 " ms; bursty %" PRIu64 " ms)\n", tm->file,
               osv_shape_str(tm->dims, tm->rank, ds, sizeof ds), THR_MIN_CALLS,
               thr_block_ns(o, m, L_LATENCY) / 1000000, thr_block_ns(o, m, L_BURSTY) / 1000000);
        printf("  %-10s %-16s %9s %9s %8s %10s %6s %7s %19s %6s %6s %6s %6s\n", "load", "config", "p50 µs",
               "p99 µs", "runs/s", "CPU/run µs", "cores", "tail ms", "p50/a [min..max]", "runs/a", "CPU/a",
               "others", "calls");
        for (int l = 0; l < THR_LOADS; l++) {
            for (int i = 0; i < THR_CFGS; i++) {
                double lo, hi, r50 = thr_ratio(t, m, l, i, offsetof(thr_block_t, p50), &lo, &hi), x, y;
                double rr = thr_ratio(t, m, l, i, offsetof(thr_block_t, rps), &x, &y);
                double rc = thr_ratio(t, m, l, i, offsetof(thr_block_t, cpu_run), &x, &y);
                char cfg[64], rng[40];
                snprintf(cfg, sizeof cfg, "%s %s", thr_cfgs[i].key, thr_cfgs[i].tag);
                snprintf(rng, sizeof rng, "%.2f [%.2f..%.2f]", r50, lo, hi);
                printf("  %-10s %-16s %9.*f %9.*f %8.0f %10.*f %6.2f %7.1f %19s %6.2f %6.2f %6.2f %6.0f\n",
                       i ? "" : thr_load_names[l], cfg, tm->prec,
                       thr_med(t, m, l, i, offsetof(thr_block_t, p50)) / 1e3, tm->prec,
                       thr_med(t, m, l, i, offsetof(thr_block_t, p99)) / 1e3,
                       thr_med(t, m, l, i, offsetof(thr_block_t, rps)), tm->prec,
                       thr_med(t, m, l, i, offsetof(thr_block_t, cpu_run)) / 1e3,
                       thr_med(t, m, l, i, offsetof(thr_block_t, cores)),
                       thr_med(t, m, l, i, offsetof(thr_block_t, tail_ms)), rng, rr, rc,
                       thr_med(t, m, l, i, offsetof(thr_block_t, others)),
                       thr_med(t, m, l, i, offsetof(thr_block_t, calls)));
            }
        }
    }
}

static void thr_section(bench_t *b)
{
    thr_run_t *t = calloc(1, sizeof *t);
    uint64_t start = now_ns();
    int budget;
    if (!t)
        die("out of memory");
    b->thr = t;
    t->rounds = b->opt.quick ? 3 : 7;
    budget = b->opt.quick ? 3 : 6;
    signal(SIGPIPE, SIG_IGN); /* a dead child shows up as a failed write, with a message */
    printf("\n== 4. ORT thread settings under the server's load shapes "
           "(one child process per configuration) ==\n");
    printf("loads   : ");
    for (int l = 0; l < THR_LOADS; l++)
        printf("%s%-10s = %s\n", l ? "          " : "", thr_load_names[l], thr_load_desc[l]);
    printf("figures : p50/p99 per call (every caller's calls pooled); runs/s = calls / wall time; "
           "CPU/run = the child's\n"
           "          utime+stime (all its threads) over the block plus the spin-down after it (\"tail\", "
           "until idle) / calls;\n"
           "          cores = CPU during the block / wall time; x/a = median over rounds of the per-round "
           "ratio to configuration a;\n"
           "          others = cores busy outside the child meanwhile (/proc/stat, 10 ms ticks): "
           "the noise on the machine\n");
    printf(
        "noise   : a cell where others > %.1f during any block is measured again once (at most %d cells)\n",
        THR_NOISY, budget);
    printf("method  : %d rounds; in every (model, load) cell the configurations run one block each, "
           "a..f then f..a; inter_op=1\n",
           t->rounds);
    for (int i = 0; i < THR_CFGS; i++)
        thr_spawn(t, &b->opt, i);
    for (int i = 0; i < THR_CFGS; i++)
        if (!xread(t->res_fd[i], &t->ready[i], sizeof t->ready[i]))
            die("threads child %s failed to start (its message is above)", thr_cfgs[i].key);
    printf("  %-3s %-40s %-50s %11s %13s\n", "cfg", "configuration", "env options", "threads",
           "load+warm ms");
    for (int i = 0; i < THR_CFGS; i++) {
        const thr_cfg_t *c = &thr_cfgs[i];
        char eo[96];
        snprintf(eo, sizeof eo, "global_thread_pools=%d intra_op=%d spinning=%d", c->global, c->intra,
                 c->spin);
        printf("  %-3s %-40s %-50s %11d %13.0f\n", c->key, c->label, eo, t->ready[i].threads,
               t->ready[i].load_ms);
    }
    printf(
        "  (threads = the child's threads after loading the 3 models: its main thread, one thread of ORT's "
        "own, and the pools' workers)\n");
    fflush(stdout);
    for (int r = 0; r < t->rounds; r++) {
        for (int m = 0; m < THR_MODELS; m++)
            for (int l = 0; l < THR_LOADS; l++)
                for (int attempt = 0;; attempt++) {
                    double worst = 0;
                    for (int j = 0; j < THR_CFGS; j++) {
                        int i = r % 2 ? THR_CFGS - 1 - j : j;
                        thr_cmd_t cmd = {1, m, l, thr_block_ns(&b->opt, m, l)};
                        xwrite(t->cmd_fd[i], &cmd, sizeof cmd);
                        if (!xread(t->res_fd[i], &t->blk[m][l][i][r], sizeof t->blk[m][l][i][r]))
                            die("threads child %s died (its message is above)", thr_cfgs[i].key);
                        worst = fmax(worst, t->blk[m][l][i][r].others);
                    }
                    /* Another process took a core's worth during this cell: measure the whole cell
                     * again, once, within the budget (the configurations stay comparable). */
                    if (worst <= THR_NOISY)
                        break;
                    if (attempt || t->reruns == budget) {
                        t->disturbed++;
                        break;
                    }
                    t->reruns++;
                }
        printf("  round %d/%d done at %.0f s\n", r + 1, t->rounds, (double)(now_ns() - start) / 1e9);
        fflush(stdout);
    }
    for (int i = 0; i < THR_CFGS; i++) {
        thr_cmd_t quit = {0, 0, 0, 0};
        int status;
        xwrite(t->cmd_fd[i], &quit, sizeof quit);
        close(t->cmd_fd[i]);
        close(t->res_fd[i]);
        waitpid(t->pid[i], &status, 0);
    }
    t->seconds = (double)(now_ns() - start) / 1e9;
    printf(
        "  noise: %d cells measured again (budget %d); in the end %d of %d cells (model × load × round) had "
        "a block during which\n         other processes kept > %.1f core busy: their figures are noisy\n",
        t->reruns, budget, t->disturbed, t->rounds * THR_MODELS * THR_LOADS, THR_NOISY);
    thr_print(t, &b->opt);
    printf("\n  section 4 took %.0f s\n", t->seconds);
}

/* ---- JSON ----------------------------------------------------------------------------------------- */

/* Writes s as a JSON string literal. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* Headline figures: overhead against the best bare variant, or forced/zero-copy ratio. */
static void json_summary(FILE *f, const section_t *s)
{
    double lo, hi;
    if (s->bytes) {
        fprintf(f, ",\"forced_over_zero_p50\":%.3f",
                paired(&s->v[1], &s->v[0], s->rounds, offsetof(block_t, p50), RATIO, &lo, &hi));
        fprintf(f, ",\"forced_over_zero_p99\":%.3f",
                paired(&s->v[1], &s->v[0], s->rounds, offsetof(block_t, p99), RATIO, &lo, &hi));
        return;
    }
    const variant_t *best = best_bare(s), *o = &s->v[V_OSV];
    fputs(",\"best_bare\":", f);
    json_str(f, best->name);
    fprintf(f, ",\"overhead_p50_ns\":%.1f",
            paired(o, best, s->rounds, offsetof(block_t, p50), DIFF, &lo, &hi));
    fprintf(f, ",\"overhead_p99_ns\":%.1f",
            paired(o, best, s->rounds, offsetof(block_t, p99), DIFF, &lo, &hi));
    fprintf(f, ",\"ratio_p50\":%.4f", paired(o, best, s->rounds, offsetof(block_t, p50), RATIO, &lo, &hi));
    int slower = 0;
    for (int r = 0; r < s->rounds; r++)
        slower += o->blk[r].p50 > best->blk[r].p50;
    fprintf(f, ",\"osv_slower_rounds\":%d", slower);
    fprintf(f, ",\"own_code_p50_ns\":%.1f",
            paired(o, &s->v[V_BARE_PERCALL], s->rounds, offsetof(block_t, p50), DIFF, &lo, &hi));
}

static void json_variant(FILE *f, const variant_t *v, int rounds)
{
    fputs("{\"name\":", f);
    json_str(f, v->name);
    fprintf(f, ",\"p50_ns\":%.1f,\"p99_ns\":%.1f,\"minflt_per_call\":%.4f,", med_p50(v, rounds),
            med_p99(v, rounds), med_minflt(v, rounds));
    fprintf(f, "\"allocs_per_call\":%.3f,\"frees_per_call\":%.3f,\"alloc_bytes_per_call\":%.1f,", v->allocs,
            v->frees, v->alloc_bytes);
    fprintf(f, "\"osv_allocs_per_call\":%.3f,\"copied_bytes_per_call\":%.1f,\"rounds\":[", v->osv_allocs,
            v->copied);
    for (int r = 0; r < rounds; r++)
        fprintf(f, "%s{\"p50_ns\":%.1f,\"p99_ns\":%.1f,\"minflt_per_call\":%.4f}", r ? "," : "",
                v->blk[r].p50, v->blk[r].p99, v->blk[r].minflt);
    fputs("]}", f);
}

static void json_section(FILE *f, const section_t *s)
{
    fputs("{\"name\":", f);
    json_str(f, s->name);
    fputs(",\"title\":", f);
    json_str(f, s->title);
    fprintf(f, ",\"rounds\":%d,\"calls_per_block\":%zu,\"count_calls\":%zu", s->rounds, s->calls,
            s->count_calls);
    if (s->bytes)
        fprintf(f, ",\"input_bytes\":%" PRIu64 ",\"peak_rss_kib\":[%ld,%ld],\"rss_before_kib\":[%ld,%ld]",
                s->bytes, s->rss_peak_kib[0], s->rss_peak_kib[1], s->rss_base_kib[0], s->rss_base_kib[1]);
    json_summary(f, s);
    fputs(",\"variants\":[", f);
    for (int j = 0; j < s->nv; j++) {
        if (j)
            fputc(',', f);
        json_variant(f, &s->v[j], s->rounds);
    }
    fputs("]}", f);
}

static void json_threads(FILE *f, const thr_run_t *t)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"p50_ns", offsetof(thr_block_t, p50)},         {"p99_ns", offsetof(thr_block_t, p99)},
        {"runs_per_s", offsetof(thr_block_t, rps)},     {"cpu_per_run_ns", offsetof(thr_block_t, cpu_run)},
        {"cores", offsetof(thr_block_t, cores)},        {"spin_tail_ms", offsetof(thr_block_t, tail_ms)},
        {"other_cores", offsetof(thr_block_t, others)}, {"calls", offsetof(thr_block_t, calls)}};
    fprintf(f, ",\"threads\":{\"rounds\":%d,\"seconds\":%.1f,\"reruns\":%d,\"disturbed\":%d,\"configs\":[",
            t->rounds, t->seconds, t->reruns, t->disturbed);
    for (int i = 0; i < THR_CFGS; i++) {
        fprintf(f, "%s{\"key\":\"%s\",\"label\":", i ? "," : "", thr_cfgs[i].key);
        json_str(f, thr_cfgs[i].label);
        fprintf(f, ",\"global_thread_pools\":%s,\"intra_op\":%d,\"spinning\":%d,\"threads\":%d}",
                thr_cfgs[i].global ? "true" : "false", thr_cfgs[i].intra, thr_cfgs[i].spin,
                t->ready[i].threads);
    }
    fputs("],\"results\":[", f);
    for (int m = 0, first = 1; m < THR_MODELS; m++)
        for (int l = 0; l < THR_LOADS; l++)
            for (int i = 0; i < THR_CFGS; i++, first = 0) {
                fprintf(f, "%s{\"model\":\"%s\",\"load\":\"%s\",\"config\":\"%s\"", first ? "" : ",",
                        thr_models[m].file, thr_load_names[l], thr_cfgs[i].key);
                for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
                    fprintf(f, ",\"%s\":%.1f", fields[k].name, thr_med(t, m, l, i, fields[k].off));
                fputs(",\"rounds\":[", f);
                for (int r = 0; r < t->rounds; r++) {
                    const thr_block_t *x = &t->blk[m][l][i][r];
                    fprintf(f,
                            "%s{\"p50_ns\":%.1f,\"p99_ns\":%.1f,\"runs_per_s\":%.1f,\"cpu_per_run_ns\":%.1f,"
                            "\"other_cores\":%.2f}",
                            r ? "," : "", x->p50, x->p99, x->rps, x->cpu_run, x->others);
                }
                fputs("]}", f);
            }
    fputs("]}", f);
}

static void write_json(const bench_t *b, const char *cpu)
{
    FILE *f = fopen(b->opt.json, "w");
    if (!f)
        die("%s: %s", b->opt.json, strerror(errno));
    fputs("{\"command\":", f);
    json_str(f, b->opt.command);
    fputs(",\"cpu\":", f);
    json_str(f, cpu);
    fprintf(f, ",\"cpus\":%ld,\"ort_version\":\"%s\",\"ortserve_version\":\"%s\",\"hook_active\":%s,",
            sysconf(_SC_NPROCESSORS_ONLN), osv_env_ort_version(b->env), osv_version(),
            b->hook_allocs ? "true" : "false");
    fprintf(f, "\"quick\":%s,\"timer_ns\":%.1f,\"sections\":[", b->opt.quick ? "true" : "false", b->timer_ns);
    for (int i = 0; i < b->nsec; i++) {
        if (i)
            fputc(',', f);
        json_section(f, &b->sec[i]);
    }
    fputc(']', f);
    if (b->thr)
        json_threads(f, b->thr);
    fputs("}\n", f);
    fclose(f);
}

/* ---- Machine description ------------------------------------------------------------------------- */

static void read_line(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    buf[0] = '\0';
    if (f) {
        if (fgets(buf, (int)cap, f))
            buf[strcspn(buf, "\n")] = '\0';
        fclose(f);
    }
}

static void cpu_model(char *buf, size_t cap)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(buf, cap, "unknown CPU");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(buf, cap, "%s", colon + 2);
            buf[strcspn(buf, "\n")] = '\0';
            break;
        }
    }
    if (f)
        fclose(f);
}

/* Median cost of one clock read in the timing loop (included in every per-call figure). */
static double timer_overhead(void)
{
    size_t n = 100000;
    uint64_t t = now_ns();
    for (size_t i = 0; i < n; i++) {
        uint64_t t1 = now_ns();
        samples[i] = t1 - t;
        t = t1;
    }
    qsort(samples, n, sizeof *samples, cmp_u64);
    return (double)pct(samples, n, 0.5);
}

static void print_machine(const bench_t *b, const char *cpu)
{
    struct utsname u;
    cpu_set_t set;
    char cs[64], load[128];
    const osv_env_opts_t *eo = osv_env_opts(b->env);
    uname(&u);
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource", cs, sizeof cs);
    read_line("/proc/loadavg", load, sizeof load);
    printf("ortserve core_run — in-process benchmark of the core run path "
           "(figures only; nothing asserted)\n");
    printf("command  : %s\n", b->opt.command);
    printf("machine  : %s, %ld online CPUs (%d usable), %s %s %s\n", cpu, sysconf(_SC_NPROCESSORS_ONLN),
           CPU_COUNT(&set), u.sysname, u.release, u.machine);
    printf("           clocksource %s, timer read %.0f ns (inside every per-call figure), loadavg %s\n", cs,
           b->timer_ns, load);
    printf("ORT      : %s (%s), C API %d; ortserve %s\n", osv_env_ort_version(b->env),
           osv_env_ort_path(b->env), osv_env_api_version(), osv_version());
    if (b->hook_allocs)
        printf("mallocs  : counting hook active (%" PRIu64
               " malloc-family calls while ORT loaded and created its env)\n",
               b->hook_allocs);
    else
        printf("mallocs  : WARNING: counting hook NOT active (no allocation seen from ORT): "
               "whole-process counts below are invalid\n");
    printf("threads  : intra_op=%d inter_op=%d spinning=%d global_pools=%d (env defaults, every model)\n",
           eo->threads.intra_op, eo->threads.inter_op, eo->threads.spinning, eo->global_thread_pools);
    printf("method   : variants interleaved in blocks (round r: A B C..., round r+1: ...C B A); "
           "p50/p99 per block;\n"
           "           tables show the median over rounds; "
           "differences and ratios are medians of per-round values\n");
}

/* ---- main ----------------------------------------------------------------------------------------- */

static void plans(const options_t *o, plan_t *net, plan_t *mob, plan_t *copy)
{
    uint64_t ms = 1000000;
    *net = (plan_t){.rounds = o->quick ? 3 : 15,
                    .warm_ns = 100 * ms,
                    .block_ns = (o->quick ? 50 : 150) * ms,
                    .min_calls = 200,
                    .count_calls = 2000};
    *mob = (plan_t){.rounds = o->quick ? 3 : 11,
                    .warm_ns = 150 * ms,
                    .block_ns = (o->quick ? 120 : 250) * ms,
                    .min_calls = 10,
                    .count_calls = 20};
    *copy = (plan_t){.rounds = o->quick ? 3 : 11,
                     .warm_ns = 50 * ms,
                     .block_ns = (o->quick ? 100 : 300) * ms,
                     .min_calls = 10,
                     .count_calls = 20};
}

static void run_copy(bench_t *b, const plan_t *p, long (*base)[2], long (*peak)[2])
{
    osv_model_t *m = load_model(b, "scale2x", "scale2x.onnx");
    printf("\n== 2. Zero-copy vs forced copy (force_copy: input copied into the slot, "
           "output copied out of ORT's buffer; both counted) ==\n");
    printf("scale2x.onnx  y = 2x, FP32[N]; peak RSS measured in a fresh child process per variant "
           "(10 calls), Δ = over its RSS before the first call\n");
    for (size_t i = 0; i < n_copy_sizes(&b->opt); i++)
        section_copy(b, m, copy_sizes[i], p, base[i], peak[i]);
    print_copy_table(b);
    osv_model_release(m);
}

int main(int argc, char **argv)
{
    bench_t b;
    plan_t pnet, pmob, pcopy;
    osv_err_t err;
    char cpu[256];
    long base[4][2], peak[4][2];

    memset(&b, 0, sizeof b);
    parse_args(argc, argv, &b.opt);
    if (b.opt.child) /* section 4's child process: one configuration, commands from the parent */
        return thr_child_main(&b.opt);
    plans(&b.opt, &pnet, &pmob, &pcopy);
    check_models(&b.opt);
    samples = xalloc(MAX_SAMPLES * sizeof *samples);
    cpu_model(cpu, sizeof cpu);
    b.timer_ns = timer_overhead();
    if (wanted(&b.opt, "copy")) /* before this process loads ORT: the children start clean */
        for (size_t i = 0; i < n_copy_sizes(&b.opt); i++)
            for (int f = 0; f < 2; f++)
                rss_probe(&b.opt, copy_sizes[i], f, &base[i][f], &peak[i][f]);
    b.hook_allocs = atomic_load(&n_alloc);
    atomic_store(&count_on, 1);
    osv_ok(osv_env_create(NULL, &b.env, &err), &err, "ONNX Runtime environment");
    atomic_store(&count_on, 0);
    b.hook_allocs = atomic_load(&n_alloc) - b.hook_allocs;
    b.pool = make_pool(b.opt.large);
    print_machine(&b, cpu);
    if (wanted(&b.opt, "mlp") || wanted(&b.opt, "mobilenet"))
        printf("\n== 1. Run-path overhead per call: ortserve vs bare ORT Run "
               "(input bound zero-copy in both) ==\n");
    if (wanted(&b.opt, "mlp"))
        section_net(&b, "mlp", "mlp.onnx", &pnet, 1000, 1, "ns");
    if (wanted(&b.opt, "mobilenet"))
        section_net(&b, "mobilenet", "mobilenetv2.onnx", &pmob, 0, 1e3, "µs");
    if (wanted(&b.opt, "copy"))
        run_copy(&b, &pcopy, base, peak);
    if (wanted(&b.opt, "threads"))
        thr_section(&b);
    if (b.nsec)
        print_alloc_table(&b);
    if (b.opt.json)
        write_json(&b, cpu);
    osv_pool_destroy(b.pool);
    osv_env_destroy(b.env);
    free(samples);
    free(b.thr);
    return 0;
}
