/* cmd_serve.c — `ortserve serve`: options (every flag also an ORTSERVE_* environment variable),
 * start-up (ORT environment, repository, server), signal handling and the graceful drain. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "http/http.h"
#include "serve/shm.h"
#include "obs/log.h"
#include "obs/obs.h"

typedef struct serve_cfg {
    osv_server_opts_t srv;
    osv_env_opts_t env;
    osv_limits_t limits;
    const char *repo, *model_name, *port_file, *ort_library, *log_level, *log_format, *otlp_endpoint,
        *service_name;
    double trace_ratio;
    int access_log, ort_telemetry;
    int intra_op, inter_op, spinning, global_pools;
    uint64_t pool_bytes, pool_max_slot;
    bool pool_mlock;
    const char *model_control;
    char load_models[4096];   /* --load-model NAME..., comma-separated; "" = "*", every model */
    bool load_models_flagged; /* a flag replaces the environment's list instead of adding to it */
} serve_cfg_t;

enum { T_STR, T_INT, T_U32, T_SIZE, T_I64, T_BOOL, T_RATIO, T_LIST };

typedef struct opt_def {
    const char *flag; /* long option; the variable is ORTSERVE_<FLAG with '-' as '_'> */
    int type;
    size_t off; /* offset in serve_cfg_t */
    const char *arg, *help;
} opt_def_t;

#define O(f) offsetof(serve_cfg_t, f)
static const opt_def_t opts[] = {
    {"model-repository", T_STR, O(repo), "DIR", "model repository (Triton layout) to serve [required]"},
    {"model-name", T_STR, O(model_name), "NAME",
     "DIR is one model's directory, served as NAME (KServe: /mnt/models)"},
    {"host", T_STR, O(srv.host), "ADDR", "address to listen on (default 127.0.0.1)"},
    {"port", T_INT, O(srv.port), "N", "TCP port (default 8000; 0 picks a free one)"},
    {"port-file", T_STR, O(port_file), "PATH", "write the port actually bound to PATH once listening"},
    {"loops", T_INT, O(srv.loops), "N", "event-loop threads (default: one per core)"},
    {"workers", T_INT, O(srv.workers), "N", "inference worker threads (default: one per core)"},
    {"intra-op-threads", T_INT, O(intra_op), "N", "ORT threads per Run (default 1; 0 = one per core)"},
    {"inter-op-threads", T_INT, O(inter_op), "N", "ORT threads across graph nodes (default 1)"},
    {"spinning", T_BOOL, O(spinning), "0|1", "let ORT pool threads spin-wait for work (default 0)"},
    {"global-thread-pools", T_BOOL, O(global_pools), "0|1",
     "one ORT thread pool shared by all models (default 0)"},
    {"max-connections", T_U32, O(srv.max_connections), "N",
     "open connections before new ones get 503 (default 4096, or 1/16 of a smaller memory limit over "
     "what one connection can hold, at least 64)"},
    {"max-body-bytes", T_SIZE, O(srv.max_body_bytes), "SIZE", "request body limit, 413 beyond (64M)"},
    {"max-header-bytes", T_U32, O(srv.max_header_bytes), "N",
     "request line + headers limit, 431 beyond (16384)"},
    {"max-headers", T_U32, O(srv.max_headers), "N", "request header count limit, 431 beyond (100)"},
    {"max-json-depth", T_U32, O(srv.max_json_depth), "N", "JSON nesting limit (64)"},
    {"max-json-tokens", T_U32, O(srv.max_json_tokens), "N", "JSON values per request header (65536)"},
    {"max-tensor-elements", T_SIZE, O(limits.max_tensor_elements), "N", "elements per tensor (64Mi)"},
    {"max-tensor-bytes", T_SIZE, O(limits.max_tensor_bytes), "SIZE", "bytes per tensor (256M)"},
    {"max-dims", T_U32, O(limits.max_dims), "N", "tensor rank limit (8, at most 16)"},
    {"deadline-ms", T_I64, O(srv.deadline_ms), "MS", "default request deadline; 0 disables (500)"},
    {"max-queue", T_U32, O(srv.max_queue), "N", "queued requests per model before 503 (64)"},
    {"memory-high-pct", T_U32, O(srv.memory_high_pct), "PCT",
     "under a cgroup memory limit: refuse inferences with 503 above PCT % of it; 0 disables (90)"},
    {"inline-threshold-us", T_I64, O(srv.inline_threshold_ns), "US",
     "models faster than this run on the loop (200)"},
    {"image-max-pixels", T_SIZE, O(srv.image_max_pixels), "N",
     "classify: largest image (width x height in its header) a model accepts (40000000)"},
    {"image-max-bytes", T_SIZE, O(srv.image_max_bytes), "SIZE", "classify: largest encoded image (20M)"},
    {"image-max-images", T_U32, O(srv.image_max_images), "N", "classify: images per request (64)"},
    {"image-decode-budget", T_SIZE, O(srv.image_decode_budget), "SIZE",
     "memory image decoding may hold at once, all requests together; an image that does not fit gets "
     "503, one larger than SIZE 413 (default: half of what the cgroup leaves after the pool, else 1/8 "
     "of memory within [64M, 1G])"},
    {"pool-bytes", T_SIZE, O(pool_bytes), "SIZE", "tensor memory pool (default: 1/4 of the memory limit)"},
    {"pool-max-slot-bytes", T_SIZE, O(pool_max_slot), "SIZE", "largest pool slot (64M)"},
    {"pool-mlock", T_BOOL, O(pool_mlock), "0|1", "lock the pool in RAM (default 0)"},
    {"header-timeout-ms", T_INT, O(srv.header_timeout_ms), "MS", "time to send a request head (10000)"},
    {"body-timeout-ms", T_INT, O(srv.body_timeout_ms), "MS",
     "time between body bytes / response progress (30000)"},
    {"min-body-rate", T_U32, O(srv.min_body_rate), "BYTES/S",
     "after the grace, a request body must average this rate or get 408; 0 disables (240)"},
    {"body-rate-grace-ms", T_INT, O(srv.body_rate_grace_ms), "MS",
     "time a request body is given before --min-body-rate applies (5000)"},
    {"idle-timeout-ms", T_INT, O(srv.idle_timeout_ms), "MS",
     "idle keep-alive connections are closed after (60000)"},
    {"drain-timeout-ms", T_INT, O(srv.drain_timeout_ms), "MS",
     "on SIGTERM, time given to requests in flight (10000)"},
    {"retry-after-s", T_U32, O(srv.retry_after_s), "S", "Retry-After on 503 responses (1)"},
    {"auth-token-file", T_STR, O(srv.auth_token_file), "FILE",
     "require 'Authorization: Bearer <token>' except on health endpoints (one token a line; SIGHUP "
     "re-reads)"},
    {"model-control-mode", T_STR, O(model_control), "MODE",
     "explicit: the repository API may load and unload models; none: it may not (explicit)"},
    {"load-model", T_LIST, O(load_models), "NAME",
     "explicit mode: load NAME at start-up (repeatable, or NAME,NAME; default *: every model)"},
    {"allow-shm", T_BOOL, O(srv.allow_shm), "0|1", "allow system shared-memory registration (default 0)"},
    {"shm-max-bytes", T_SIZE, O(srv.shm_max_bytes), "SIZE",
     "bytes all registered shared-memory regions may span together, 400 beyond (default: the pool's)"},
    {"force-copy", T_BOOL, O(srv.force_copy), "0|1",
     "copy every tensor instead of binding in place (benchmarks)"},
    {"ort-library", T_STR, O(ort_library), "PATH", "libonnxruntime.so.1 to load"},
    {"ort-telemetry", T_BOOL, O(ort_telemetry), "0|1",
     "let ONNX Runtime's own telemetry run (default 0: off)"},
    {"log-level", T_STR, O(log_level), "LEVEL", "debug|info|warn|error|off (info)"},
    {"log-format", T_STR, O(log_format), "FMT", "json|text (json)"},
    {"access-log", T_BOOL, O(access_log), "0|1", "one log line per request (default 1)"},
    {"otlp-endpoint", T_STR, O(otlp_endpoint), "URL",
     "export trace spans over OTLP/HTTP, e.g. http://127.0.0.1:4318"},
    {"trace-sample-ratio", T_RATIO, O(trace_ratio), "R",
     "share of requests without a sampled parent to trace (0.01)"},
    {"service-name", T_STR, O(service_name), "NAME", "service.name of exported spans (ortserve)"},
};
#undef O
#define N_OPTS (sizeof opts / sizeof *opts)

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: ortserve serve --model-repository DIR [options]\n"
               "Serves every model in DIR over KServe v2 HTTP/1.1 (with Triton's binary, shared-memory,\n"
               "statistics, repository and classification extensions). SIGTERM/SIGINT drain and exit 0.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char var[64], flag[64];
        snprintf(var, sizeof var, "ORTSERVE_%s", opts[i].flag);
        for (char *p = var; *p; p++)
            *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        snprintf(flag, sizeof flag, "--%s %s", opts[i].flag, opts[i].arg);
        fprintf(f, "  %-34s %s\n  %-34s   env %s\n", flag, opts[i].help, "", var);
    }
    fprintf(f, "\nSIZE accepts K, M, G (powers of 1024), e.g. 64M.\n");
}

/* "64M" -> 67108864. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1;
    if (end == s || errno || *s == '-')
        return -1;
    if (*end) {
        switch (*end == 'k' ? 'K' : *end == 'm' ? 'M' : *end == 'g' ? 'G' : *end) {
        case 'K':
            mul = 1ull << 10;
            break;
        case 'M':
            mul = 1ull << 20;
            break;
        case 'G':
            mul = 1ull << 30;
            break;
        default:
            return -1;
        }
        if (end[1] && !(end[1] == 'i' && !end[2]) && !((end[1] == 'B' || end[1] == 'b') && !end[2]))
            return -1;
    }
    if (!osv_mul_u64(v, mul, out))
        return -1;
    return 0;
}

static int set_opt(serve_cfg_t *cfg, const opt_def_t *o, const char *v)
{
    void *p = (char *)cfg + o->off;
    char *end;
    long long n;
    uint64_t u;
    switch (o->type) {
    case T_STR:
        *(const char **)p = v;
        return 0;
    case T_LIST: {
        char *list = p;
        size_t have = strlen(list), add = strlen(v);
        if (!add || have + 1 + add >= sizeof cfg->load_models)
            return -1;
        if (have)
            list[have++] = ',';
        memcpy(list + have, v, add + 1);
        return 0;
    }
    case T_BOOL:
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes"))
            n = 1;
        else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no"))
            n = 0;
        else
            return -1;
        if (o->off == offsetof(serve_cfg_t, srv.allow_shm) ||
            o->off == offsetof(serve_cfg_t, srv.force_copy) || o->off == offsetof(serve_cfg_t, pool_mlock))
            *(bool *)p = n != 0;
        else
            *(int *)p = (int)n;
        return 0;
    case T_RATIO: {
        double d = strtod(v, &end);
        if (end == v || *end || !(d >= 0 && d <= 1))
            return -1;
        *(double *)p = d;
        return 0;
    }
    case T_SIZE:
        if (parse_size(v, &u) != 0)
            return -1;
        *(uint64_t *)p = u;
        return 0;
    default:
        errno = 0;
        n = strtoll(v, &end, 10);
        if (end == v || *end || errno || n < 0)
            return -1;
        if (o->type == T_INT && n <= INT32_MAX)
            *(int *)p = (int)n;
        else if (o->type == T_U32 && n <= UINT32_MAX)
            *(uint32_t *)p = (uint32_t)n;
        else if (o->type == T_I64)
            *(int64_t *)p = o->off == offsetof(serve_cfg_t, srv.inline_threshold_ns) ? n * 1000 : n;
        else
            return -1;
        return 0;
    }
}

static bool is_bool_word(const char *v)
{
    static const char *const words[] = {"0", "1", "true", "false", "yes", "no"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcasecmp(v, words[i]) == 0)
            return true;
    return false;
}

static void defaults(serve_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    osv_server_opts_default(&c->srv);
    osv_env_opts_default(&c->env);
    osv_limits_default(&c->limits);
    c->intra_op = c->env.threads.intra_op;
    c->inter_op = c->env.threads.inter_op;
    c->spinning = c->env.threads.spinning;
    c->log_level = "info";
    c->log_format = "json";
    c->access_log = 1;
    c->trace_ratio = 0.01;
    c->model_control = "explicit";
}

/* Environment first, flags override. */
static int parse(serve_cfg_t *cfg, int argc, char **argv)
{
    struct option lo[N_OPTS + 2];
    for (size_t i = 0; i < N_OPTS; i++) {
        char var[64];
        const char *v;
        snprintf(var, sizeof var, "ORTSERVE_%s", opts[i].flag);
        for (char *p = var; *p; p++)
            *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        if ((v = getenv(var)) && *v && set_opt(cfg, &opts[i], v) != 0) {
            fprintf(stderr, "ortserve serve: invalid value '%s' for %s\n", v, var);
            return 2;
        }
        lo[i] = (struct option){opts[i].flag, opts[i].type == T_BOOL ? optional_argument : required_argument,
                                NULL, (int)(256 + i)};
    }
    lo[N_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
    lo[N_OPTS + 1] = (struct option){NULL, 0, NULL, 0};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c == 'h') {
            serve_usage(stdout);
            return 1;
        }
        if (c < 256 || c >= 256 + (int)N_OPTS) {
            serve_usage(stderr);
            return 2;
        }
        const opt_def_t *o = &opts[c - 256];
        const char *v = optarg;
        if (o->type == T_LIST && !cfg->load_models_flagged) {
            cfg->load_models[0] = '\0'; /* flags replace ORTSERVE_LOAD_MODEL */
            cfg->load_models_flagged = true;
        }
        if (!v && o->type == T_BOOL && optind < argc && is_bool_word(argv[optind]))
            v = argv[optind++]; /* "--allow-shm 0" as well as "--allow-shm" and "--allow-shm=0" */
        if (set_opt(cfg, o, v ? v : "1") != 0) {
            fprintf(stderr, "ortserve serve: invalid value '%s' for --%s (%s)\n", optarg ? optarg : "",
                    o->flag, o->arg);
            return 2;
        }
    }
    if (optind != argc || !cfg->repo) {
        fprintf(stderr,
                "ortserve serve: --model-repository DIR is required (or ORTSERVE_MODEL_REPOSITORY)\n\n");
        serve_usage(stderr);
        return 2;
    }
    return 0;
}

static osv_server_t *the_server;

static void on_signal(int sig)
{
    if (!the_server)
        return;
    if (sig == SIGHUP)
        osv_server_reload(the_server); /* an atomic store: the main thread re-reads the token file */
    else
        osv_server_stop(the_server); /* async-signal-safe: an atomic and eventfd writes */
}

static void ort_log(void *ud, int severity, const char *category, const char *msg)
{
    char m[2048], cat[128];
    (void)ud;
    int level = severity <= 1 ? OSV_LOG_DEBUG : severity == 2 ? OSV_LOG_WARN : OSV_LOG_ERROR;
    osv_log(level, "onnxruntime", "\"category\":\"%s\",\"message\":\"%s\"",
            osv_log_escape(category, cat, sizeof cat), osv_log_escape(msg, m, sizeof m));
}

static int log_model(void *ud, osv_model_t *m)
{
    char name[300];
    (void)ud;
    osv_log(OSV_LOG_INFO, "model_ready",
            "\"model\":\"%s\",\"version\":%" PRId64 ",\"inputs\":%u,\"outputs\":%u,\"load_ms\":%.1f,"
            "\"warmup_run_bytes\":%" PRIu64,
            osv_log_escape(osv_model_name(m), name, sizeof name), osv_model_version(m),
            osv_model_input_count(m), osv_model_output_count(m), osv_model_load_ms(m),
            osv_model_warmup_bytes(m));
    if (osv_model_warmup_error(m)) {
        char e[1200];
        osv_log(OSV_LOG_WARN, "warmup_failed", "\"model\":\"%s\",\"error\":\"%s\"", name,
                osv_log_escape(osv_model_warmup_error(m), e, sizeof e));
    }
    return 0;
}

/* Models that should have loaded but did not are errors; models --load-model left out are not. */
static void log_unavailable(osv_repo_t *repo)
{
    osv_repo_entry_t e[64];
    size_t n = 0;
    osv_repo_index(repo, false, e, 64, &n);
    for (size_t i = 0; i < n && i < 64; i++) {
        char name[300], reason[2048];
        if (e[i].state != OSV_MODEL_READY)
            osv_log(e[i].wanted ? OSV_LOG_ERROR : OSV_LOG_INFO,
                    e[i].wanted ? "model_unavailable" : "model_not_loaded",
                    "\"model\":\"%s\",\"reason\":\"%s\"", osv_log_escape(e[i].name, name, sizeof name),
                    osv_log_escape(e[i].reason, reason, sizeof reason));
    }
}

/* Each connection is a descriptor: raise the soft RLIMIT_NOFILE (often 1024) towards the hard limit
 * so that --max-connections, not EMFILE, is what bounds connections; warn when the hard limit is
 * too low. (Out of descriptors the server still answers 503 and never spins: src/http/loop.c.) */
static void fit_nofile(uint32_t max_connections, uint32_t regions)
{
    struct rlimit rl;
    /* listeners, models, logs, ORT; with --allow-shm a descriptor per shared-memory region */
    rlim_t want = (rlim_t)max_connections + 256 + regions;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (rl.rlim_cur > old && setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= want)
        return;
    osv_log(OSV_LOG_WARN, "nofile_limit",
            "\"open_files\":%llu,\"max_connections\":%u,\"message\":\"the descriptor limit is below "
            "--max-connections + %d: connections beyond it get 503 (raise LimitNOFILE / ulimit -n)\"",
            (unsigned long long)(rl.rlim_cur > old ? rl.rlim_cur : old), max_connections, 256 + regions);
}

static void write_port_file(const char *path, uint16_t port)
{
    char tmp[4200];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if ((f = fopen(tmp, "w"))) {
        fprintf(f, "%u\n", port);
        fclose(f);
        rename(tmp, path); /* atomic: a reader never sees a half-written port */
    }
}

static void log_start(const serve_cfg_t *cfg, osv_server_t *s, osv_env_t *env, double ms)
{
    char host[300], repo[4200];
    osv_pool_stats_t ps;
    osv_pool_get_stats(s->pool, &ps);
    osv_log(OSV_LOG_INFO, "listening",
            "\"host\":\"%s\",\"port\":%u,\"repository\":\"%s\",\"models\":%zu,\"ready\":%s,\"ort\":\"%s\","
            "\"loops\":%d,"
            "\"intra_op_threads\":%d,\"pool_bytes\":%" PRIu64 ",\"pool_max_slot\":%" PRIu64
            ",\"image_decode_budget\":%" PRIu64 ",\"max_body_bytes\":%" PRIu64 ",\"max_connections\":%u"
            ",\"deadline_ms\":%" PRId64 ",\"shm_max_bytes\":%" PRIu64
            ",\"model_control\":\"%s\",\"startup_ms\":%.1f",
            osv_log_escape(cfg->srv.host, host, sizeof host), s->port,
            osv_log_escape(cfg->repo, repo, sizeof repo), osv_repo_model_count(s->repo),
            osv_repo_ready(s->repo) ? "true" : "false", osv_env_ort_version(env), s->n_loops,
            cfg->env.threads.intra_op, ps.total_bytes, osv_pool_max_slot(s->pool),
            osv_img_budget_limit(s->img_budget), cfg->srv.max_body_bytes, s->o.max_connections,
            cfg->srv.deadline_ms, cfg->srv.allow_shm ? s->o.shm_max_bytes : 0,
            cfg->srv.model_control ? "explicit" : "none", ms);
}

/* The next name of a comma-separated list: its length (0 at the end); *p moves past it. */
static size_t next_name(const char **p, const char **name)
{
    size_t n = strcspn(*p, ",");
    *name = *p;
    *p += n + ((*p)[n] == ',');
    return n;
}

/* --model-control-mode and --load-model, as Triton's flags of the same names: "none" loads every
 * model and refuses the repository API's load/unload; "explicit" allows them and loads the models
 * listed (ortserve's default list is "*", every model; Triton's is none). A list of just "*" becomes
 * "". Returns 0 or prints why. */
static int check_model_control(serve_cfg_t *cfg)
{
    const char *mode = cfg->model_control, *p = cfg->load_models, *name;
    if (strcasecmp(mode, "none") != 0 && strcasecmp(mode, "explicit") != 0) {
        fprintf(stderr, "ortserve serve: --model-control-mode must be none or explicit, not '%s'%s\n", mode,
                strcasecmp(mode, "poll") == 0 ? " (polling the repository is not supported: use the "
                                                "repository API's load in explicit mode)"
                                              : "");
        return 2;
    }
    cfg->srv.model_control = strcasecmp(mode, "explicit") == 0;
    if (strcmp(cfg->load_models, "*") == 0)
        cfg->load_models[0] = '\0';
    if (cfg->load_models[0] && !cfg->srv.model_control) {
        fprintf(stderr, "ortserve serve: --load-model needs --model-control-mode explicit (none loads every "
                        "model)\n");
        return 2;
    }
    for (size_t n; (n = next_name(&p, &name)) > 0 || *p;) {
        if (!osv_model_name_valid(name, n)) {
            fprintf(stderr, "ortserve serve: --load-model '%.*s': %s\n", (int)n, name,
                    n == 1 && *name == '*' ? "'*' must be the only --load-model"
                                           : "not a model name ([A-Za-z0-9_.-], not starting with '.')");
            return 2;
        }
    }
    return 0;
}

/* Explicit mode with a list: loads the listed models. A name the repository does not hold stops
 * start-up; a model that fails to load is UNAVAILABLE with its reason, as with every model. */
static int load_listed(osv_repo_t *repo, const char *list, osv_err_t *err)
{
    char name[128], why[sizeof err->msg];
    const char *p = list, *at;
    for (size_t n; (n = next_name(&p, &at)) > 0;) {
        snprintf(name, sizeof name, "%.*s", (int)n, at);
        int rc = osv_repo_load(repo, name, err);
        if (rc == OSV_ENOTFOUND || rc == OSV_EINVAL) {
            snprintf(why, sizeof why, "%s", err->msg);
            return osv_err_set(err, rc, "--load-model %s: %s", name, why);
        }
    }
    return 0;
}

static int serve(serve_cfg_t *cfg)
{
    uint64_t t0 = osv_now_ns();
    osv_env_t *env = NULL;
    osv_repo_t *repo = NULL;
    osv_server_t *s = NULL;
    osv_err_t err;
    int rc;

    cfg->env.ort_library = cfg->ort_library;
    cfg->env.threads = (osv_threads_t){cfg->intra_op, cfg->inter_op, cfg->spinning};
    cfg->env.global_thread_pools = cfg->global_pools != 0;
    cfg->env.log_fn = ort_log;
    cfg->env.telemetry = cfg->ort_telemetry != 0;
    cfg->srv.pool.total_bytes = cfg->pool_bytes;
    cfg->srv.pool.max_slot = cfg->pool_max_slot;
    cfg->srv.pool.mlock = cfg->pool_mlock;
    if (cfg->srv.pool.max_slot == 0)
        cfg->srv.pool.max_slot =
            cfg->srv.max_body_bytes > (64ull << 20) ? cfg->srv.max_body_bytes : 64ull << 20;
    osv_obs_opts_t oo = {.access_log = cfg->access_log != 0,
                         .otlp_endpoint = cfg->otlp_endpoint,
                         .service_name = cfg->service_name,
                         .trace_ratio = cfg->trace_ratio,
                         .loops = cfg->srv.loops > 0 ? cfg->srv.loops : (int)sysconf(_SC_NPROCESSORS_ONLN)};
    cfg->srv.loops = oo.loops;
    if (osv_obs_init(&oo, &err) != 0) {
        osv_log(OSV_LOG_ERROR, "startup_failed", "\"error\":\"%s\"", err.msg);
        return 1;
    }
    if ((rc = osv_env_create(&cfg->env, &env, &err)) != 0) {
        osv_log(OSV_LOG_ERROR, "startup_failed", "\"error\":\"%s\"", err.msg);
        return 1;
    }
    bool all = !cfg->load_models[0]; /* check_model_control turned "*" into "" */
    osv_repo_opts_t ro = {.env = env,
                          .path = cfg->repo,
                          .limits = cfg->limits,
                          .load_all = all,
                          .hook = osv_server_model_hook,
                          .hook_ud = &cfg->srv,
                          .model_name = cfg->model_name && *cfg->model_name ? cfg->model_name : NULL};
    if ((rc = osv_repo_open(&ro, &repo, &err)) != 0 ||
        (!all && (rc = load_listed(repo, cfg->load_models, &err)) != 0) ||
        (rc = osv_server_create(&cfg->srv, env, repo, &s, &err)) != 0) {
        char e[2048];
        osv_log(OSV_LOG_ERROR, "startup_failed", "\"error\":\"%s\"", osv_log_escape(err.msg, e, sizeof e));
        osv_repo_close(repo);
        osv_env_destroy(env);
        return 1;
    }
    fit_nofile(s->o.max_connections, cfg->srv.allow_shm ? OSV_SHM_MAX_REGIONS : 0);
    osv_repo_foreach(repo, log_model, NULL);
    log_unavailable(repo);
    the_server = s;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (cfg->port_file)
        write_port_file(cfg->port_file, s->port);
    log_start(cfg, s, env, (double)(osv_now_ns() - t0) / 1e6);
    rc = osv_server_run(s);
    osv_log(rc ? OSV_LOG_WARN : OSV_LOG_INFO, "stopped", "\"drained\":%s", rc ? "false" : "true");
    the_server = NULL;
    osv_server_destroy(s);
    osv_obs_shutdown();
    osv_repo_close(repo);
    osv_env_destroy(env);
    return 0;
}

int osv_cli_serve(int argc, char **argv)
{
    serve_cfg_t cfg;
    int rc, level;
    defaults(&cfg);
    if ((rc = parse(&cfg, argc, argv)) != 0)
        return rc == 1 ? 0 : rc;
    if ((level = osv_log_level_from(cfg.log_level)) < 0 ||
        (strcmp(cfg.log_format, "json") != 0 && strcmp(cfg.log_format, "text") != 0)) {
        fprintf(stderr,
                "ortserve serve: --log-level must be debug|info|warn|error|off and --log-format json|text\n");
        return 2;
    }
    if ((rc = check_model_control(&cfg)) != 0)
        return rc;
    osv_log_init(level, strcmp(cfg.log_format, "json") == 0, 2);
    return serve(&cfg);
}
