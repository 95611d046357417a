/* cmd_serve.c — `ortserve serve`: options (every flag also an ORTSERVE_* environment variable),
 * start-up (ORT environment, repository, server), signal handling and the graceful drain. */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"
#include "grpc/server.h"
#include "http/server.h"
#include "serve/shm.h"
#include "ortserve/sysmem.h"
#include "obs/log.h"
#include "obs/obs.h"

typedef struct serve_cfg {
    osv_server_opts_t srv;
    osv_grpc_opts_t grpc;
    const char *grpc_port_file, *grpc_port;
    osv_env_opts_t env;
    osv_limits_t limits;
    const char *repo, *model_name, *port_file, *ort_library, *log_level, *log_format, *otlp_endpoint,
        *service_name;
    double trace_ratio;
    bool access_log, ort_telemetry;
    int intra_op, inter_op;
    int cpus;                        /* what the thread defaults follow (osv_sysmem_cpus, read once) */
    bool spinning, global_pools;
    uint64_t pool_bytes, pool_max_slot;
    bool pool_mlock;
    const char *model_control;       /* NULL: not given (check_model_control's default) */
    bool model_control_defaulted_off; /* none by default: listening beyond loopback without tokens */
    osv_opt_list_t load_models; /* --load-model NAME..., comma-separated; "" = "*", every model */
    osv_load_opts_t load;       /* Triton configs: auto-completion and their limits */
} serve_cfg_t;

#define DAY_MS      86400000u     /* the longest time option accepted */
#define HOUR_US     3600000000ull /* the longest --inline-threshold-us */
#define MAX_THREADS 1024          /* loops, workers and ORT threads */
#define GRPC_PORT_UNSET (-2)      /* no --grpc-port: 8001, or any free port when --port is 0 */

/* Every option, with the range it accepts (opts.h checks at compile time that each field holds it). */
#define OSV_OPT_STRUCT serve_cfg_t
static const osv_opt_t opts[] = {
    OSV_OPT_STRING("model-repository", repo, "DIR", "model repository (Triton layout) to serve [required]"),
    OSV_OPT_STRING("model-name", model_name, "NAME",
                   "DIR is one model's directory, served as NAME (KServe: /mnt/models)"),
    OSV_OPT_STRING("host", srv.host, "ADDR", "address to listen on (default 127.0.0.1)"),
    OSV_OPT_COUNT("port", srv.port, 0, 65535, "0 = any free port", "N",
                  "TCP port (default 8000; 0 picks a free one)"),
    OSV_OPT_STRING("port-file", port_file, "PATH", "write the port actually bound to PATH once listening"),
    OSV_OPT_STRING("grpc-port", grpc_port, "N",
                   "gRPC (KServe v2 / Triton, HTTP/2 cleartext) port: 0 picks a free one, -1 turns gRPC off "
                   "(default 8001, or 0 when --port is 0)"),
    OSV_OPT_STRING("grpc-port-file", grpc_port_file, "PATH", "write the gRPC port actually bound to PATH"),
    OSV_OPT_BYTES("grpc-max-message-bytes", grpc.max_message_bytes, 0, 0xffffffffull, "0 = --max-body-bytes",
                  "largest gRPC message either way, RESOURCE_EXHAUSTED beyond (default: --max-body-bytes)"),
    OSV_OPT_COUNT("grpc-max-streams", grpc.max_streams, 1, 1u << 16, NULL, "N",
                  "concurrent HTTP/2 streams per gRPC connection, refused beyond (100)"),
    OSV_OPT_BYTES("grpc-max-header-list-bytes", grpc.max_header_list, 1024, 1u << 24, NULL,
                  "a gRPC request's header list, HTTP 431 beyond (16K)"),
    OSV_OPT_BYTES("grpc-stream-window", grpc.stream_window, 65535, 0x7fffffffu, NULL,
                  "HTTP/2 flow-control window of each gRPC stream (1M)"),
    OSV_OPT_BYTES("grpc-conn-window", grpc.conn_window, 65535, 0x7fffffffu, NULL,
                  "HTTP/2 flow-control window of each gRPC connection (16M)"),
    OSV_OPT_BYTES("grpc-max-frame-bytes", grpc.max_frame, 16384, 16777215, NULL,
                  "largest HTTP/2 frame a gRPC client may send (1M): a tensor in few frames, read in place"),
    OSV_OPT_COUNT("grpc-max-inflight", grpc.max_inflight, 1, 1u << 20, NULL, "N",
                  "inference requests in progress on one gRPC connection, streams included (1024)"),
    OSV_OPT_BYTES("grpc-max-h2-memory", grpc.max_h2_memory, 64u << 10, 1ull << 32, NULL,
                  "memory the HTTP/2 library may hold for one gRPC connection, GOAWAY beyond (4M)"),
    OSV_OPT_DURATION("grpc-idle-timeout-ms", grpc.idle_timeout_ms, OSV_OPT_MS, OSV_OPT_MS, 0, DAY_MS, "0 = never",
                     "MS", "a gRPC connection without open streams is closed after (60000)"),
    OSV_OPT_DURATION("grpc-keepalive-ms", grpc.keepalive_ms, OSV_OPT_MS, OSV_OPT_MS, 0, DAY_MS, "0 = off", "MS",
                     "PING a gRPC connection silent this long; no answer in as long closes it (0: off)"),
    OSV_OPT_DURATION("grpc-stall-timeout-ms", grpc.stall_timeout_ms, OSV_OPT_MS, OSV_OPT_MS, 0, DAY_MS,
                     "0 = never", "MS", "gRPC output that makes no progress this long (a zero window) closes the "
                     "connection (30000)"),
    OSV_OPT_COUNT("grpc-frame-rate", grpc.frame_rate_limit, 0, 1u << 20, "0 = unlimited", "N",
                  "PING/SETTINGS/RST_STREAM/empty DATA frames a gRPC client may send per second, GOAWAY beyond "
                  "(100)"),
    OSV_OPT_COUNT("loops", srv.loops, 0, MAX_THREADS, "0 = one per CPU", "N",
                  "event-loop threads (default: one per CPU this process may use: affinity, cgroup quota)"),
    OSV_OPT_COUNT("workers", srv.workers, 0, MAX_THREADS, "0 = one per CPU", "N",
                  "inference worker threads (default: one per CPU this process may use)"),
    OSV_OPT_COUNT("intra-op-threads", intra_op, 0, MAX_THREADS, "0 = one per core", "N",
                  "ORT threads per Run (default 1; 0 = one per core)"),
    OSV_OPT_COUNT("inter-op-threads", inter_op, 0, MAX_THREADS, NULL, "N",
                  "ORT threads across graph nodes (default 1)"),
    OSV_OPT_FLAG("spinning", spinning, "let ORT pool threads spin-wait for work (default 0)"),
    OSV_OPT_FLAG("global-thread-pools", global_pools, "one ORT thread pool shared by all models (default 0)"),
    OSV_OPT_COUNT(
        "max-connections", srv.max_connections, 0, 1u << 20, "0 = from the memory limit", "N",
        "open connections before new ones get 503 (default 4096, or 1/16 of a smaller memory limit over "
        "what one connection can hold, at least 64)"),
    OSV_OPT_BYTES("max-body-bytes", srv.max_body_bytes, 1, OSV_OPT_TiB, NULL,
                  "request body limit, 413 beyond (64M)"),
    OSV_OPT_BYTES("max-header-bytes", srv.max_header_bytes, 1u << 10, 1u << 20, NULL,
                  "request line + headers limit, 431 beyond (16384)"),
    OSV_OPT_COUNT("max-headers", srv.max_headers, 1, 10000, NULL, "N",
                  "request header count limit, 431 beyond (100)"),
    OSV_OPT_COUNT("max-json-depth", srv.max_json_depth, 1, 1024, NULL, "N", "JSON nesting limit (64)"),
    OSV_OPT_COUNT("max-json-tokens", srv.max_json_tokens, 64, 1u << 24, NULL, "N",
                  "JSON values per request header (65536)"),
    OSV_OPT_COUNT("max-tensor-elements", limits.max_tensor_elements, 1, 1ull << 40, NULL, "N",
                  "elements per tensor (64Mi)"),
    OSV_OPT_BYTES("max-tensor-bytes", limits.max_tensor_bytes, 1, OSV_OPT_TiB, NULL,
                  "bytes per tensor (256M)"),
    OSV_OPT_COUNT("max-dims", limits.max_dims, 1, OSV_MAX_DIMS, NULL, "N",
                  "tensor rank limit (8, at most 16)"),
    OSV_OPT_DURATION("deadline-ms", srv.deadline_ms, OSV_OPT_MS, OSV_OPT_MS, 0, DAY_MS, "0 disables", "MS",
                     "default request deadline; 0 disables (500, or 10 x a slower model's warm-up run)"),
    OSV_OPT_COUNT("max-queue", srv.max_queue, 0, 1u << 16, NULL, "N",
                  "queued requests per model before 503 (64)"),
    OSV_OPT_COUNT(
        "memory-high-pct", srv.memory_high_pct, 0, 100, "0 disables", "PCT",
        "under a cgroup memory limit: refuse inferences with 503 above PCT % of it; 0 disables (90)"),
    OSV_OPT_DURATION("inline-threshold-us", srv.inline_threshold_ns, OSV_OPT_US, OSV_OPT_NS, 0, HOUR_US, NULL,
                     "US", "models faster than this run on the loop (200)"),
    OSV_OPT_COUNT("image-max-pixels", srv.image_max_pixels, 1, 1ull << 40, NULL, "N",
                  "classify: largest image (width x height in its header) a model accepts (40000000)"),
    OSV_OPT_BYTES("image-max-bytes", srv.image_max_bytes, 1, OSV_OPT_TiB, NULL,
                  "classify: largest encoded image (20M)"),
    OSV_OPT_COUNT("image-max-images", srv.image_max_images, 1, 1u << 20, NULL, "N",
                  "classify: images per request (64)"),
    OSV_OPT_BYTES(
        "image-decode-budget", srv.image_decode_budget, 0, OSV_OPT_TiB, "0 = the default",
        "memory image decoding may hold at once, all requests together; an image that does not fit gets "
        "503, one larger than SIZE 413 (default: half of what the cgroup leaves after the pool, else 1/8 "
        "of memory within [64M, 1G])"),
    OSV_OPT_BYTES("pool-bytes", pool_bytes, 0, OSV_OPT_TiB, "0 = the default",
                  "tensor memory pool (default: 1/4 of the memory limit)"),
    OSV_OPT_BYTES("pool-max-slot-bytes", pool_max_slot, 0, OSV_OPT_TiB, "0 = the default",
                  "largest pool slot (64M)"),
    OSV_OPT_FLAG("pool-mlock", pool_mlock, "lock the pool in RAM (default 0)"),
    OSV_OPT_DURATION("header-timeout-ms", srv.header_timeout_ms, OSV_OPT_MS, OSV_OPT_MS, 1, DAY_MS, NULL,
                     "MS", "time to send a request head (10000)"),
    OSV_OPT_DURATION("body-timeout-ms", srv.body_timeout_ms, OSV_OPT_MS, OSV_OPT_MS, 1, DAY_MS, NULL, "MS",
                     "time between body bytes / response progress (30000)"),
    OSV_OPT_COUNT("min-body-rate", srv.min_body_rate, 0, 1u << 30, "0 disables", "BYTES/S",
                  "after the grace, a request body must average this rate or get 408; 0 disables (240)"),
    OSV_OPT_DURATION("body-rate-grace-ms", srv.body_rate_grace_ms, OSV_OPT_MS, OSV_OPT_MS, 0, DAY_MS, NULL,
                     "MS", "time a request body is given before --min-body-rate applies (5000)"),
    OSV_OPT_DURATION("idle-timeout-ms", srv.idle_timeout_ms, OSV_OPT_MS, OSV_OPT_MS, 1, DAY_MS, NULL, "MS",
                     "idle keep-alive connections are closed after (60000)"),
    OSV_OPT_DURATION("drain-timeout-ms", srv.drain_timeout_ms, OSV_OPT_MS, OSV_OPT_MS, 0, DAY_MS, NULL, "MS",
                     "on SIGTERM, time given to requests in flight (10000)"),
    OSV_OPT_DURATION("retry-after-s", srv.retry_after_s, OSV_OPT_S, OSV_OPT_S, 0, 86400, NULL, "S",
                     "Retry-After on 503 responses (1)"),
    OSV_OPT_STRING(
        "auth-token-file", srv.auth_token_file, "FILE",
        "require 'Authorization: Bearer <token>' except on health endpoints (one token a line; SIGHUP "
        "re-reads)"),
    OSV_OPT_STRING("model-control-mode", model_control, "MODE",
                   "explicit: the repository API may load and unload models; none: it may not (default: "
                   "explicit on loopback or with --auth-token-file, none otherwise)"),
    OSV_OPT_LIST("load-model", load_models, "NAME",
                 "explicit mode: load NAME at start-up (repeatable, or NAME,NAME; default *: every model)"),
    OSV_OPT_COUNT("default-max-batch-size", load.default_max_batch_size, 0, 1u << 20, NULL, "N",
                  "config.pbtxt auto-completion: max_batch_size of a batchable model that gives none (4, as "
                  "Triton's default-max-batch-size)"),
    OSV_OPT_COUNT("max-instances", load.max_instances, 1, 1024, NULL, "N",
                  "model instances (sessions) a config.pbtxt instance_group may ask for (16)"),
    OSV_OPT_COUNT("max-warmup-runs", load.max_warmup_runs, 0, 1u << 20, NULL, "N",
                  "warm-up executions a config.pbtxt model_warmup may ask for, per version (1000)"),
    OSV_OPT_BYTES("model-config-max-bytes", load.config_max_bytes, 1u << 10, 64u << 20, NULL,
                  "largest config.pbtxt (1M)"),
    OSV_OPT_COUNT("model-config-max-depth", load.config_max_depth, 1, 1024, NULL, "N",
                  "message nesting limit of a config.pbtxt (32)"),
    OSV_OPT_FLAG("allow-shm", srv.allow_shm, "allow system shared-memory registration (default 0)"),
    OSV_OPT_BYTES(
        "shm-max-bytes", srv.shm_max_bytes, 0, OSV_OPT_TiB, "0 = the pool's budget",
        "bytes all registered shared-memory regions may span together, 400 beyond (default: the pool's)"),
    OSV_OPT_BYTES("cache-size", srv.cache_bytes, 0, OSV_OPT_TiB, "0 = no cache",
                  "response cache for models with response_cache enabled: whole responses kept, least recently "
                  "used evicted; kept out of the pool's share of the memory limit (default 0: no cache)"),
    OSV_OPT_FLAG("force-copy", srv.force_copy, "copy every tensor instead of binding in place (benchmarks)"),
    OSV_OPT_STRING("ort-library", ort_library, "PATH", "libonnxruntime.so.1 to load"),
    OSV_OPT_FLAG("ort-telemetry", ort_telemetry, "let ONNX Runtime's own telemetry run (default 0: off)"),
    OSV_OPT_STRING("log-level", log_level, "LEVEL", "debug|info|warn|error|off (info)"),
    OSV_OPT_STRING("log-format", log_format, "FMT", "json|text (json)"),
    OSV_OPT_FLAG("access-log", access_log, "one log line per request (default 1)"),
    OSV_OPT_STRING("otlp-endpoint", otlp_endpoint, "URL",
                   "export trace spans over OTLP/HTTP, e.g. http://127.0.0.1:4318"),
    OSV_OPT_RATIO("trace-sample-ratio", trace_ratio, "R",
                  "share of requests without a sampled parent to trace (0.01)"),
    OSV_OPT_STRING("service-name", service_name, "NAME", "service.name of exported spans (ortserve)"),
};
#undef OSV_OPT_STRUCT

/* Flags of Triton's tritonserver that users try first. An unknown flag found here is answered with
 * ortserve's own. Entries go when ortserve gets the flag itself. */
static const osv_opt_hint_t triton_flags[] = {
    {"http-port", "port", NULL},
    {"metrics-port", "port", "/metrics is served on the HTTP port"},
    {"http-address", "host", NULL},
    {"model-store", "model-repository", NULL},
    {"log-verbose", "log-level", "--log-level debug"},
    {"log-info", "log-level", NULL},
    {"log-warning", "log-level", NULL},
    {"log-error", "log-level", NULL},
    {"exit-timeout-secs", "drain-timeout-ms", "in milliseconds"},
    {"http-thread-count", "loops", NULL},
    {"response-cache-byte-size", "cache-size", NULL},
    {"cache-config", "cache-size", "--cache-size SIZE (the local cache: local,size=SIZE)"},
};

static const osv_opt_cmd_t serve_cmd = {.name = "serve",
                                        .opts = opts,
                                        .n_opts = sizeof opts / sizeof *opts,
                                        .hints = triton_flags,
                                        .n_hints = sizeof triton_flags / sizeof *triton_flags,
                                        .env_prefix = "ORTSERVE_",
                                        .max_args = 0};

/* ORTSERVE_* variables read outside the options table (test hooks of src/core/sysmem.c): not typos. */
static const char *const other_vars[] = {"ORTSERVE_CGROUP_ROOT", "ORTSERVE_PROC_CGROUP", NULL};

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: ortserve serve --model-repository DIR [options]\n"
               "Serves every model in DIR over KServe v2 HTTP/1.1 (with Triton's binary, shared-memory,\n"
               "statistics, repository and classification extensions). SIGTERM/SIGINT drain and exit 0.\n\n");
    osv_opt_print_help(f, &serve_cmd);
    fprintf(f, "\n" OSV_OPT_NUMBER_HELP "\nMS, US and S are whole milliseconds, microseconds and seconds.\n"
               "A value out of its option's range is a usage error (exit 2).\n");
}

static void defaults(serve_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    osv_server_opts_default(&c->srv);
    osv_grpc_opts_default(&c->grpc);
    c->grpc.port = GRPC_PORT_UNSET;
    osv_env_opts_default(&c->env);
    osv_limits_default(&c->limits);
    osv_load_opts_default(&c->load);
    c->intra_op = c->env.threads.intra_op;
    c->inter_op = c->env.threads.inter_op;
    c->spinning = c->env.threads.spinning != 0;
    c->log_level = "info";
    c->log_format = "json";
    c->access_log = true;
    c->trace_ratio = 0.01;
    c->model_control = NULL; /* check_model_control picks the default from --host and the tokens */
}

/* Environment first, flags override. Returns 0, 1 after --help, or 2 after a usage error. */
static int parse(serve_cfg_t *cfg, int argc, char **argv)
{
    int n_args, rc = osv_opt_parse(&serve_cmd, cfg, argc, argv, &n_args);
    if (rc == OSV_OPT_HELP) {
        serve_usage(stdout);
        return 1;
    }
    if (rc)
        return rc;
    if (cfg->grpc_port) { /* -1 (off) is outside what a COUNT option parses */
        char *end;
        long v = strtol(cfg->grpc_port, &end, 10);
        if (!*cfg->grpc_port || *end || v < -1 || v > 65535) {
            fprintf(stderr, "ortserve serve: invalid value '%s' for --grpc-port: want an integer from -1 (off) to "
                            "65535 (0 = any free port)\n", cfg->grpc_port);
            return 2;
        }
        cfg->grpc.port = (int)v;
    }
    if (cfg->grpc.port == GRPC_PORT_UNSET) /* an ephemeral HTTP port (tests, benchmarks) wants both */
        cfg->grpc.port = cfg->srv.port == 0 ? 0 : 8001;
    if (!cfg->repo) {
        fprintf(stderr, "ortserve serve: --model-repository DIR is required (or ORTSERVE_MODEL_REPOSITORY)\n"
                        "Run 'ortserve serve --help' for every option.\n");
        return 2;
    }
    return 0;
}

static void warn_unknown_var(void *ud, const char *var, size_t len, const char *suggestion)
{
    char name[256], hint[300] = "";
    (void)ud;
    snprintf(name, sizeof name, "%.*s", (int)(len < 200 ? len : 200), var);
    if (suggestion)
        snprintf(hint, sizeof hint, ",\"did_you_mean\":\"%s\"", suggestion);
    osv_log(OSV_LOG_WARN, "unknown_variable",
            "\"variable\":\"%s\"%s,\"message\":\"no option reads it: ignored\"",
            osv_log_escape(name, (char[512]){0}, 512), hint);
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

/* The server models' deadlines are read from, once it exists: written by the main thread before it
 * starts serving (release), read by the thread that loads models (acquire). */
static _Atomic(osv_server_t *) deadline_server;
/* The gRPC front, told when a load or unload may have changed a health status (its Watch streams): the
 * same lifetime and threads as deadline_server. */
static _Atomic(osv_grpc_t *) health_front;

/* model_ready: what a load made ready, with the deadline its requests get (0 and "none" before the
 * server exists). */
static void log_ready(osv_model_t *m, const char *v, bool reloaded)
{
    char name[300];
    const char *source = "none";
    osv_server_t *s = atomic_load_explicit(&deadline_server, memory_order_acquire);
    int64_t deadline = s ? osv_server_model_deadline(s, m, &source) : 0;
    osv_log(OSV_LOG_INFO, "model_ready",
            "\"model\":\"%s\"%s,\"reloaded\":%s,\"config\":\"%s\",\"max_batch_size\":%d,\"instances\":%u,"
            "\"inputs\":%u,\"outputs\":%u,\"load_ms\":%.1f,\"warmup_runs\":%u,\"warmup_ms\":%.1f,"
            "\"warmup_run_bytes\":%" PRIu64 ",\"deadline_ms\":%" PRId64 ",\"deadline_source\":\"%s\"",
            osv_log_escape(osv_model_name(m), name, sizeof name), v, reloaded ? "true" : "false",
            osv_model_has_pbtxt(m) ? "config.pbtxt" : "none", osv_model_max_batch_size(m),
            osv_model_instance_count(m), osv_model_input_count(m), osv_model_output_count(m),
            osv_model_load_ms(m), osv_model_warmup_runs(m), (double)osv_model_warmup_ns(m) / 1e6,
            osv_model_warmup_bytes(m), deadline, source);
    if (osv_model_warmup_error(m)) {
        char why[1200];
        osv_log(OSV_LOG_WARN, "warmup_failed", "\"model\":\"%s\"%s,\"error\":\"%s\"", name, v,
                osv_log_escape(osv_model_warmup_error(m), why, sizeof why));
    }
}

/* The models loaded at start-up, once the server (and so their deadlines) exists (osv_repo_foreach). */
static int log_started(void *ud, osv_model_t *m)
{
    char v[32];
    (void)ud;
    snprintf(v, sizeof v, ",\"version\":%" PRId64, osv_model_version(m));
    log_ready(m, v, false);
    return 0;
}

/* What the repository's loads and unloads did (osv_repo_opts_t.on_event), on the loading thread (Health/Watch
 * streams are told a status may have changed):
 * model_ready (after start-up: log_started logs the first loads), model_unloaded, model_load_failed
 * (with the reason). */
static void log_repo_event(void *ud, const osv_repo_event_t *e)
{
    char name[300], why[2400], v[32] = "";
    (void)ud;
    osv_grpc_health_changed(atomic_load_explicit(&health_front, memory_order_acquire));
    if (e->version >= 0)
        snprintf(v, sizeof v, ",\"version\":%" PRId64, e->version);
    if (e->kind == OSV_REPO_READY) {
        if (atomic_load_explicit(&deadline_server, memory_order_acquire))
            log_ready(e->model, v, e->reloaded);
        return;
    }
    osv_log_escape(e->name, name, sizeof name);
    osv_log(e->kind == OSV_REPO_FAILED ? OSV_LOG_ERROR : OSV_LOG_INFO,
            e->kind == OSV_REPO_FAILED ? "model_load_failed" : "model_unloaded",
            "\"model\":\"%s\"%s,\"reason\":\"%s\"", name, v, osv_log_escape(e->reason, why, sizeof why));
}

/* Models that should have loaded but did not are errors; models --load-model left out are not. A
 * repository that serves nothing says why, and how to fix it. */
static void log_unavailable(osv_repo_t *repo)
{
    if (osv_repo_layout_problem(repo)) {
        char msg[2400];
        osv_log(OSV_LOG_ERROR, "repository_layout", "\"message\":\"%s\",\"ready\":false",
                osv_log_escape(osv_repo_layout_problem(repo), msg, sizeof msg));
    }
    osv_repo_entry_t *e;
    size_t n = 0, cap;
    osv_repo_index(repo, false, NULL, 0, &n);
    cap = n;
    if (!n || !(e = osv_calloc(cap, sizeof *e))) /* rows are 1.2 KB each: not on the stack */
        return;
    osv_repo_index(repo, false, e, cap, &n);
    for (size_t i = 0; i < n && i < cap; i++) {
        char name[300], reason[2048];
        if (e[i].state != OSV_MODEL_READY)
            osv_log(e[i].wanted ? OSV_LOG_ERROR : OSV_LOG_INFO,
                    e[i].wanted ? "model_unavailable" : "model_not_loaded",
                    "\"model\":\"%s\",\"reason\":\"%s\"", osv_log_escape(e[i].name, name, sizeof name),
                    osv_log_escape(e[i].reason, reason, sizeof reason));
    }
    osv_free(e);
}

/* Each connection is a descriptor: raise the soft RLIMIT_NOFILE (often 1024) towards the hard limit
 * so that --max-connections, not EMFILE, is what bounds connections; warn when the hard limit is
 * too low. (Out of descriptors the server still answers 503 and never spins: src/net/loop.c.) */
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

/* The gRPC front on the server's transport (loops, request layer, in-flight count), unless
 * --grpc-port -1. */
static int start_grpc(serve_cfg_t *cfg, osv_server_t *s, osv_grpc_t **g, uint16_t *port, osv_err_t *err)
{
    osv_server_shared_t sh;
    int rc;
    if (cfg->grpc.port < 0)
        return 0;
    cfg->grpc.allow_shm = cfg->srv.allow_shm;
    cfg->grpc.model_control = cfg->srv.model_control;
    if (!cfg->grpc.max_message_bytes)
        cfg->grpc.max_message_bytes = cfg->srv.max_body_bytes;
    osv_server_get_shared(s, &sh);
    if ((rc = osv_grpc_create(&cfg->grpc, sh.serve, sh.net, sh.inflight, g, err)) != 0)
        return rc;
    return osv_grpc_listen(*g, cfg->srv.host, cfg->grpc.port, port, err);
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

static void log_start(const serve_cfg_t *cfg, const osv_server_plan_t *s, osv_repo_t *r, osv_env_t *env,
                      int grpc_port, double ms)
{
    char host[300], repo[4200], grpc[48] = "";
    osv_pool_stats_t ps;
    osv_pool_get_stats(s->pool, &ps);
    osv_log(OSV_LOG_INFO, "listening",
            "\"host\":\"%s\",\"port\":%u,\"repository\":\"%s\",\"models\":%zu,\"ready\":%s,\"ort\":\"%s\","
            "\"cpus\":%d,\"loops\":%d,\"workers\":%d,"
            "\"intra_op_threads\":%d,\"pool_bytes\":%" PRIu64 ",\"pool_max_slot\":%" PRIu64
            ",\"image_decode_budget\":%" PRIu64 ",\"max_body_bytes\":%" PRIu64 ",\"max_connections\":%u"
            ",\"deadline_ms\":%" PRId64 ",\"deadline_follows_model\":%s,\"shm_max_bytes\":%" PRIu64
            ",\"model_control\":\"%s\",\"startup_ms\":%.1f%s",
            osv_log_escape(cfg->srv.host, host, sizeof host), s->port,
            osv_log_escape(cfg->repo, repo, sizeof repo), osv_repo_model_count(r),
            osv_repo_ready(r) ? "true" : "false", osv_env_ort_version(env), cfg->cpus, s->loops, s->workers,
            cfg->env.threads.intra_op, ps.total_bytes, osv_pool_max_slot(s->pool),
            osv_img_budget_limit(s->img_budget), cfg->srv.max_body_bytes, s->max_connections,
            cfg->srv.deadline_ms < 0 ? (int64_t)500 : cfg->srv.deadline_ms, cfg->srv.deadline_ms < 0 ? "true" : "false",
            cfg->srv.allow_shm ? s->shm_max_bytes : 0,
            cfg->srv.model_control ? "explicit" : "none", ms,
            grpc_port >= 0 ? (snprintf(grpc, sizeof grpc, ",\"grpc_port\":%d", grpc_port), grpc) : "");
}

/* The pool's plan: the budget (--pool-bytes, or the default computed from the memory limit), each
 * class as SLOT_BYTESxSLOTS, and what they reserve together (the budget, to within the smallest slot
 * of a class not yet full: osv_pool_create). */
static void log_pool_plan(const serve_cfg_t *cfg, const osv_server_plan_t *s)
{
    char classes[OSV_POOL_MAX_CLASSES * 32] = "";
    size_t n = 0;
    osv_pool_stats_t ps;
    osv_pool_get_stats(s->pool, &ps);
    for (uint32_t i = 0; i < ps.n_classes && n < sizeof classes; i++)
        n += (size_t)snprintf(classes + n, sizeof classes - n, "%s%" PRIu64 "x%u", i ? "," : "",
                              ps.cls[i].slot_size, ps.cls[i].slots);
    osv_log(OSV_LOG_INFO, "pool_plan",
            "\"budget\":\"%s\",\"budget_bytes\":%" PRIu64 ",\"planned_bytes\":%" PRIu64 ",\"classes\":\"%s\""
            ",\"cache_bytes\":%" PRIu64,
            cfg->pool_bytes ? "--pool-bytes" : "default", osv_pool_budget(s->pool), ps.total_bytes, classes,
            cfg->srv.cache_bytes);
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
    const char *mode = cfg->model_control, *p = cfg->load_models.v, *name;
    if (!mode) {
        /* Not asked for: any client that reaches the server could unload every model, so that is
         * allowed only where clients are local or must present a token. */
        bool tokens = cfg->srv.auth_token_file && *cfg->srv.auth_token_file;
        mode = osv_opt_host_is_loopback(cfg->srv.host) || tokens ? "explicit" : "none";
        cfg->model_control_defaulted_off = strcmp(mode, "none") == 0;
    }
    if (strcasecmp(mode, "none") != 0 && strcasecmp(mode, "explicit") != 0) {
        fprintf(stderr, "ortserve serve: --model-control-mode must be none or explicit, not '%s'%s\n", mode,
                strcasecmp(mode, "poll") == 0 ? " (polling the repository is not supported: use the "
                                                "repository API's load in explicit mode)"
                                              : "");
        return 2;
    }
    cfg->srv.model_control = strcasecmp(mode, "explicit") == 0;
    if (strcmp(cfg->load_models.v, "*") == 0)
        cfg->load_models.v[0] = '\0';
    if (cfg->load_models.v[0] && !cfg->srv.model_control) {
        fprintf(stderr, "ortserve serve: --load-model needs --model-control-mode explicit (none loads every "
                        "model)%s\n",
                cfg->model_control_defaulted_off ? "; none is the default when listening beyond loopback "
                                                   "without --auth-token-file"
                                                 : "");
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
    osv_grpc_t *grpc = NULL;
    uint16_t grpc_port = 0;
    osv_err_t err;
    int rc;

    cfg->cpus = osv_sysmem_cpus(); /* the affinity mask under the cgroup quota: the thread defaults */
    if (cfg->srv.loops <= 0)
        cfg->srv.loops = cfg->cpus;
    if (cfg->srv.workers <= 0)
        cfg->srv.workers = cfg->cpus;
    cfg->env.ort_library = cfg->ort_library;
    cfg->env.threads = (osv_threads_t){cfg->intra_op, cfg->inter_op, cfg->spinning ? 1 : 0};
    cfg->env.global_thread_pools = cfg->global_pools;
    cfg->env.log_fn = ort_log;
    cfg->env.telemetry = cfg->ort_telemetry;
    cfg->srv.pool.total_bytes = cfg->pool_bytes;
    cfg->srv.pool.max_slot = cfg->pool_max_slot;
    cfg->srv.pool.mlock = cfg->pool_mlock;
    if (cfg->srv.pool.max_slot == 0)
        cfg->srv.pool.max_slot =
            cfg->srv.max_body_bytes > (64ull << 20) ? cfg->srv.max_body_bytes : 64ull << 20;
    osv_obs_opts_t oo = {.access_log = cfg->access_log,
                         .otlp_endpoint = cfg->otlp_endpoint,
                         .service_name = cfg->service_name,
                         .trace_ratio = cfg->trace_ratio,
                         .loops = cfg->srv.loops};
    if (osv_obs_init(&oo, &err) != 0) {
        char e[1024];
        osv_log(OSV_LOG_ERROR, "startup_failed", "\"error\":\"%s\"", osv_log_escape(err.msg, e, sizeof e));
        return 1;
    }
    /* A port in use fails now, not after the models have loaded. */
    if ((rc = osv_server_check_port(cfg->srv.host, cfg->srv.port, &err)) != 0 ||
        (cfg->grpc.port >= 0 && (rc = osv_server_check_port(cfg->srv.host, cfg->grpc.port, &err)) != 0) ||
        (rc = osv_env_create(&cfg->env, &env, &err)) != 0) {
        char e[1024];
        osv_log(OSV_LOG_ERROR, "startup_failed", "\"error\":\"%s\"", osv_log_escape(err.msg, e, sizeof e));
        return 1;
    }
    bool all = !cfg->load_models.v[0]; /* check_model_control turned "*" into "" */
    /* A model without config.pbtxt may run on every thread that runs models at once, as before. */
    cfg->load.native_instances = (uint32_t)(cfg->srv.loops + cfg->srv.workers);
    osv_repo_opts_t ro = {.env = env,
                          .path = cfg->repo,
                          .limits = cfg->limits,
                          .load_all = all,
                          .hook = osv_server_model_hook,
                          .hook_ud = &cfg->srv,
                          .model_name = cfg->model_name && *cfg->model_name ? cfg->model_name : NULL,
                          .load = cfg->load,
                          .on_event = log_repo_event};
    if ((rc = osv_repo_open(&ro, &repo, &err)) != 0 ||
        (!all && (rc = load_listed(repo, cfg->load_models.v, &err)) != 0) ||
        (rc = osv_server_create(&cfg->srv, env, repo, &s, &err)) != 0 ||
        (rc = start_grpc(cfg, s, &grpc, &grpc_port, &err)) != 0) {
        char e[2048];
        osv_log(OSV_LOG_ERROR, "startup_failed", "\"error\":\"%s\"", osv_log_escape(err.msg, e, sizeof e));
        osv_server_destroy(s);
        osv_grpc_destroy(grpc);
        osv_repo_close(repo);
        osv_env_destroy(env);
        return 1;
    }
    osv_server_plan_t plan;
    osv_server_get_plan(s, &plan);
    fit_nofile(plan.max_connections, cfg->srv.allow_shm ? OSV_SHM_MAX_REGIONS : 0);
    atomic_store_explicit(&deadline_server, s, memory_order_release);
    atomic_store_explicit(&health_front, grpc, memory_order_release);
    osv_repo_foreach(repo, log_started, NULL);
    log_unavailable(repo);
    the_server = s;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (cfg->port_file)
        write_port_file(cfg->port_file, plan.port);
    if (cfg->grpc_port_file && grpc)
        write_port_file(cfg->grpc_port_file, grpc_port);
    log_pool_plan(cfg, &plan);
    if (cfg->model_control_defaulted_off) {
        char host[300];
        osv_log(OSV_LOG_WARN, "model_control_off",
                "\"host\":\"%s\",\"message\":\"listening beyond loopback without --auth-token-file: the "
                "repository API may not load or unload models (--model-control-mode explicit allows it)\"",
                osv_log_escape(cfg->srv.host, host, sizeof host));
    }
    log_start(cfg, &plan, repo, env, grpc ? grpc_port : -1, (double)(osv_now_ns() - t0) / 1e6);
    rc = osv_server_run(s);
    osv_log(rc ? OSV_LOG_WARN : OSV_LOG_INFO, "stopped", "\"drained\":%s", rc ? "false" : "true");
    the_server = NULL;
    atomic_store_explicit(&deadline_server, NULL, memory_order_release);
    atomic_store_explicit(&health_front, NULL, memory_order_release);
    osv_server_destroy(s);
    osv_grpc_destroy(grpc); /* after the transport that served it */
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
    /* A variable no option reads is reported, not refused: the environment is shared (a container's,
     * a unit's) and may be written for another version of ortserve. */
    osv_opt_unknown_vars(&serve_cmd, other_vars, warn_unknown_var, NULL);
    return serve(&cfg);
}
