/* tconfig.c — reads a model's config.pbtxt (Triton's ModelConfig in protobuf text format, through
 * util/pbtxt) into an osv_triton_config_t, checking every field against ModelConfig's schema as
 * model_config.proto defines it: unknown fields, fields given twice, wrong kinds, enum names and
 * ranges are errors naming the file, line, column and field path (e.g. "input[1].dims"). Fields an
 * ONNX model on this CPU server cannot honour (sequence batching, ensembles, GPU instances, custom
 * operator libraries, decoupled models, other platforms or backends) are refused by name; fields
 * that only matter on a GPU or to another backend are accepted and have no effect. Completion
 * against the model is tcomplete.c's.
 *
 * Each message type has a table of its fields and a handler per field; walk() dispatches. Runs on
 * the loading thread at load time only, so it allocates (into the config's arena). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "file.h"
#include "ortserve/alloc.h"
#include "tconfig.h"
#include "util/pbtxt.h"

#define ARENA_CHUNK    (16u << 10)
#define ARENA_LIMIT    (64u << 20) /* far above what a 1 MiB text can need */
#define MAX_PRIORITIES (1u << 20)  /* priority_levels */
#define MAX_THREADS    1024        /* intra/inter_op_thread_count, as config.json's threads */

/* Names already met, for duplicate checks in O(1) whatever the number of entries: an open-addressing
 * set of (what, name), sized at twice the document's fields. */
typedef struct tc_name {
    uint32_t what;
    const char *name;
} tc_name_t;

enum {
    SEEN_INPUT = 1,
    SEEN_OUTPUT,
    SEEN_PARAMETER,
    SEEN_METRIC_TAG,
    SEEN_CC_FILE,
    SEEN_PRIORITY,
    SEEN_WARMUP
};

typedef struct tc_ctx {
    osv_tconfig_t *t;
    const osv_tconfig_limits_t *lim;
    tc_name_t *seen;
    size_t seen_mask;
    const osv_pbtxt_doc_t *doc;
    osv_err_t *err;
    char path[256]; /* the field being read, e.g. "input[0].dims" */
    size_t path_len;
} tc_ctx_t;

typedef int (*tc_fn)(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *obj);

/* One field of a message: its handler, or (`why` set, fn NULL) a refusal naming why, given always or,
 * with if_true, only when the field is the bool true. */
typedef struct tc_field {
    const char *name;
    tc_fn fn;
    bool repeated;
    const char *why;
    bool if_true;
} tc_field_t;

/* ---- arena, positions, messages ------------------------------------------------------------------- */

void *osv_tconfig_alloc(osv_tconfig_t *t, size_t n, size_t size)
{
    void *p;
    size_t bytes;
    if (n && size > SIZE_MAX / n)
        return NULL;
    bytes = n * size > 0 ? n * size : 1;
    if ((p = osv_arena_alloc(&t->arena, bytes, 16)) != NULL)
        memset(p, 0, bytes);
    return p;
}

const char *osv_tconfig_strdup(osv_tconfig_t *t, const char *s)
{
    size_t n = strlen(s);
    char *p = osv_tconfig_alloc(t, n + 1, 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

const char *osv_tconfig_where(const osv_tconfig_t *t, tc_pos_t pos, char *buf, size_t cap)
{
    if (pos.line)
        snprintf(buf, cap, "%s:%u:%u: ", t->path, pos.line, pos.col);
    else
        snprintf(buf, cap, "%s: ", t->path);
    return buf;
}

static tc_pos_t pos_of(const osv_pbtxt_field_t *f)
{
    return (tc_pos_t){f->line, f->col};
}

/* "file:line:col: path: message" with the field's position; OSV_EINVAL. */
static int bad_code(tc_ctx_t *c, int code, const osv_pbtxt_field_t *f, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad_code(tc_ctx_t *c, int code, const osv_pbtxt_field_t *f, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return osv_err_set(c->err, code, "%s:%u:%u: %s: %s", c->t->path, f->vline ? f->vline : f->line,
                       f->vline ? f->vcol : f->col, c->path_len ? c->path : "config", msg);
}

#define bad(c, f, ...)         bad_code((c), OSV_EINVAL, (f), __VA_ARGS__)
#define unsupported(c, f, ...) bad_code((c), OSV_EUNSUPPORTED, (f), __VA_ARGS__)

static int no_memory(tc_ctx_t *c)
{
    return osv_err_set(c->err, OSV_ENOMEM, "out of memory reading %s", c->t->path);
}

/* Appends ".name" (or "name" at the top) or "[i]" to the field path; returns the length to restore. */
static size_t push(tc_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t push(tc_ctx_t *c, const char *fmt, ...)
{
    size_t mark = c->path_len;
    va_list ap;
    if (c->path_len < sizeof c->path) {
        va_start(ap, fmt);
        int n = vsnprintf(c->path + c->path_len, sizeof c->path - c->path_len, fmt, ap);
        va_end(ap);
        c->path_len += n > 0 ? (size_t)n : 0;
        if (c->path_len >= sizeof c->path)
            c->path_len = sizeof c->path - 1;
    }
    return mark;
}

static void pop(tc_ctx_t *c, size_t mark)
{
    c->path_len = mark;
    c->path[mark] = '\0';
}

/* True when (what, name) was met before; records it otherwise. */
static bool seen_before(tc_ctx_t *c, uint32_t what, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull ^ what;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    for (size_t i = (size_t)h & c->seen_mask;; i = (i + 1) & c->seen_mask) {
        tc_name_t *e = &c->seen[i];
        if (!e->name) {
            *e = (tc_name_t){what, name};
            return false;
        }
        if (e->what == what && strcmp(e->name, name) == 0)
            return true;
    }
}

/* ---- values ------------------------------------------------------------------------------------------- */

static int need_msg(tc_ctx_t *c, const osv_pbtxt_field_t *f)
{
    return f->kind == OSV_PBTXT_MESSAGE ? 0 : bad(c, f, "expected a message ({ ... })");
}

static int get_str(tc_ctx_t *c, const osv_pbtxt_field_t *f, const char **out)
{
    if (f->kind != OSV_PBTXT_STRING)
        return bad(c, f, "expected a string (\"...\")");
    if (strlen(f->text) != f->len)
        return bad(c, f, "the string contains a NUL byte");
    return (*out = osv_tconfig_strdup(c->t, f->text)) ? 0 : no_memory(c);
}

static int get_int(tc_ctx_t *c, const osv_pbtxt_field_t *f, int64_t lo, int64_t hi, int64_t *out)
{
    if (osv_pbtxt_int(f, lo, hi, out) == 0)
        return 0;
    return bad(c, f, "expected an integer from %" PRId64 " to %" PRId64 ", not '%.*s'", lo, hi,
               (int)(f->len > 40 ? 40 : f->len), f->kind == OSV_PBTXT_MESSAGE ? "{...}" : f->text);
}

static int get_uint(tc_ctx_t *c, const osv_pbtxt_field_t *f, uint64_t hi, uint64_t *out)
{
    if (osv_pbtxt_uint(f, hi, out) == 0)
        return 0;
    return bad(c, f, "expected an integer from 0 to %" PRIu64 ", not '%.*s'", hi,
               (int)(f->len > 40 ? 40 : f->len), f->kind == OSV_PBTXT_MESSAGE ? "{...}" : f->text);
}

static int get_bool(tc_ctx_t *c, const osv_pbtxt_field_t *f, bool *out)
{
    return osv_pbtxt_bool(f, out) == 0 ? 0 : bad(c, f, "expected true or false");
}

/* An enum by name (or by number, as the text format allows); names[v] is value v's name. */
static int get_enum(tc_ctx_t *c, const osv_pbtxt_field_t *f, const char *const *names, size_t n, int *out)
{
    int64_t v;
    char valid[256] = "";
    for (size_t i = 0; i < n; i++) {
        if (f->kind == OSV_PBTXT_SCALAR && strlen(names[i]) == f->len &&
            memcmp(names[i], f->text, f->len) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    if (osv_pbtxt_int(f, 0, (int64_t)n - 1, &v) == 0) {
        *out = (int)v;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        snprintf(valid + strlen(valid), sizeof valid - strlen(valid), "%s%s", i ? ", " : "", names[i]);
    return bad(c, f, "'%.*s' is not one of %s", (int)(f->len > 40 ? 40 : f->len),
               f->kind == OSV_PBTXT_SCALAR ? f->text : "?", valid);
}

/* A field this server does not serve: refused with the entry's reason (only when true, for if_true). */
static int refuse_field(tc_ctx_t *c, const osv_pbtxt_field_t *f, const tc_field_t *e)
{
    bool b = true;
    int rc = e->if_true ? get_bool(c, f, &b) : 0;
    if (!rc && b)
        return unsupported(c, f, "%s", e->why);
    return rc;
}

#define TRT_WHY(what) what " are a TensorRT feature, not supported for ONNX models"
#define BATCH_IO_WHY  "batch inputs and outputs are not supported for ONNX models here"

/* Dispatches each field of message `msg` to its handler in tab; unknown fields and singular fields
 * given twice are errors. */
static int walk(tc_ctx_t *c, const osv_pbtxt_field_t *msg, const char *type, const tc_field_t *tab, size_t n,
                void *obj)
{
    uint64_t seen = 0;
    int rc;
    if ((rc = need_msg(c, msg)) != 0)
        return rc;
    for (int32_t i = msg->first; i >= 0; i = c->doc->fields[i].next) {
        const osv_pbtxt_field_t *f = &c->doc->fields[i];
        size_t k = 0;
        while (k < n && !osv_pbtxt_is(f, tab[k].name))
            k++;
        if (k == n) {
            f = &(osv_pbtxt_field_t){
                .line = f->line, .col = f->col, .name = f->name, .name_len = f->name_len};
            return bad(c, f, "unknown field '%.*s' in %s", (int)(f->name_len > 64 ? 64 : f->name_len),
                       f->name, type);
        }
        size_t mark = push(c, "%s%s", c->path_len ? "." : "", tab[k].name);
        if (!tab[k].repeated && (seen >> k) & 1)
            return bad(c, f, "'%s' is given more than once", tab[k].name);
        seen |= 1ull << k;
        rc = tab[k].why ? refuse_field(c, f, &tab[k]) : tab[k].fn(c, f, obj);
        pop(c, mark);
        if (rc)
            return rc;
    }
    return 0;
}

#define WALK(c, f, type, tab, obj) walk((c), (f), (type), (tab), sizeof(tab) / sizeof *(tab), (obj))

/* Children of msg named `name`. */
static uint32_t count_named(const osv_pbtxt_doc_t *d, const osv_pbtxt_field_t *msg, const char *name)
{
    uint32_t n = 0;
    for (int32_t i = msg->first; i >= 0; i = d->fields[i].next)
        n += osv_pbtxt_is(&d->fields[i], name);
    return n;
}

/* Any message content, accepted without a look (settings for GPUs or other backends). */
static int any_message(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *obj)
{
    (void)obj;
    return need_msg(c, f);
}

/* A file name inside the model's (or a version's) directory: no path separators, no "..". */
static int plain_name(tc_ctx_t *c, const osv_pbtxt_field_t *f, const char *s)
{
    if (!*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return bad(c, f, "'%s' must be a file name inside the model directory (no '/', not '..')", s);
    return 0;
}

/* ---- tensors: ModelInput / ModelOutput -------------------------------------------------------------- */

static int get_dtype(tc_ctx_t *c, const osv_pbtxt_field_t *f, osv_dtype_t *out)
{
    int64_t v;
    if (f->kind == OSV_PBTXT_SCALAR &&
        (*out = osv_dtype_from_config(f->text, f->len, 0)) != OSV_DTYPE_INVALID)
        return 0;
    if (osv_pbtxt_int(f, 1, 14, &v) == 0 &&
        (*out = osv_dtype_from_config(NULL, 0, (int)v)) != OSV_DTYPE_INVALID)
        return 0;
    return bad(c, f,
               "'%.*s' is not a datatype (TYPE_BOOL, TYPE_UINT8 ... TYPE_FP32, TYPE_FP64, TYPE_STRING, "
               "TYPE_BF16)",
               (int)(f->len > 40 ? 40 : f->len), f->kind == OSV_PBTXT_SCALAR ? f->text : "?");
}

/* One more element of a repeated dims-like field (values from `lo`, -1 = variable). */
static int add_dim(tc_ctx_t *c, const osv_pbtxt_field_t *f, int64_t lo, int64_t *dims, uint32_t *rank)
{
    int64_t v;
    int rc;
    if (*rank == OSV_MAX_DIMS)
        return bad(c, f, "more than %d dimensions", OSV_MAX_DIMS);
    if ((rc = get_int(c, f, lo, INT32_MAX, &v)) != 0)
        return rc;
    dims[(*rank)++] = v;
    return 0;
}

typedef struct tensor_obj {
    osv_tc_tensor_t *t;
    tc_tensor_pos_t *pos;
    bool has_dtype, has_dims;
} tensor_obj_t;

static int t_name(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((tensor_obj_t *)o)->t->name);
}

static int t_data_type(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    tensor_obj_t *x = o;
    x->has_dtype = true;
    x->pos->data_type = pos_of(f);
    return get_dtype(c, f, &x->t->dtype);
}

static int t_format(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const char *const names[] = {"FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"};
    int v, rc = get_enum(c, f, names, 3, &v);
    ((tensor_obj_t *)o)->t->format = (osv_tensor_format_t)v;
    return rc;
}

static int t_dims(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    tensor_obj_t *x = o;
    if (!x->has_dims)
        x->pos->dims = pos_of(f);
    x->has_dims = true;
    return add_dim(c, f, -1, x->t->dims, &x->t->rank);
}

static int reshape_shape(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tc_tensor_t *t = o;
    return add_dim(c, f, -1, t->reshape, &t->reshape_rank);
}

static int t_reshape(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"shape", reshape_shape, true}};
    tensor_obj_t *x = o;
    x->t->has_reshape = true;
    x->pos->reshape = pos_of(f);
    return WALK(c, f, "ModelTensorReshape", tab, x->t);
}

static int t_ragged(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, &((tensor_obj_t *)o)->t->allow_ragged_batch);
}

static int t_optional(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, &((tensor_obj_t *)o)->t->optional);
}

static int t_label_filename(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    tensor_obj_t *x = o;
    int rc = get_str(c, f, &x->t->label_filename);
    x->pos->label_filename = pos_of(f);
    return rc ? rc : x->t->label_filename[0] ? plain_name(c, f, x->t->label_filename) : 0;
}

static int64_t elements(const int64_t *dims, uint32_t rank, bool *variable)
{
    int64_t n = 1;
    *variable = false;
    for (uint32_t i = 0; i < rank; i++) {
        if (dims[i] < 0)
            *variable = true;
        else if (n > 0 && dims[i] > INT64_MAX / n)
            n = INT64_MAX;
        else
            n *= dims[i];
    }
    return n;
}

static uint32_t variables(const int64_t *dims, uint32_t rank)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < rank; i++)
        n += dims[i] < 0;
    return n;
}

/* What every input or output needs once read: a name, a datatype, dims, a reshape of as many
 * elements as dims. */
static int tensor_done(tc_ctx_t *c, const osv_pbtxt_field_t *f, tensor_obj_t *x)
{
    bool vd, vr;
    if (!x->t->name || !x->t->name[0])
        return bad(c, f, "has no name");
    if (!x->has_dtype)
        return bad(c, f, "'%s' has no data_type", x->t->name);
    if (!x->has_dims)
        return bad(c, f, "'%s' has no dims (a tensor of one value is written dims: [ 1 ])", x->t->name);
    int64_t nd = elements(x->t->dims, x->t->rank, &vd), nr = elements(x->t->reshape, x->t->reshape_rank, &vr);
    if (x->t->has_reshape && !vd && !vr && nd != nr)
        return bad(c, f, "'%s': reshape has %" PRId64 " elements, dims %" PRId64, x->t->name, nr, nd);
    if (x->t->has_reshape && vd != vr)
        return bad(c, f, "'%s': dims and reshape must both have a variable (-1) dimension, or neither",
                   x->t->name);
    if (x->t->has_reshape &&
        (variables(x->t->dims, x->t->rank) > 1 || variables(x->t->reshape, x->t->reshape_rank) > 1))
        return bad(c, f,
                   "'%s': with a reshape, dims and reshape may each have one variable (-1) dimension at most",
                   x->t->name);
    if (!x->t->label_filename)
        x->t->label_filename = "";
    return 0;
}

static int tensor(tc_ctx_t *c, const osv_pbtxt_field_t *f, bool output, osv_tc_tensor_t *arr,
                  tc_tensor_pos_t *pos, uint32_t *n)
{
    static const tc_field_t in_tab[] = {
        {"name", t_name, false},
        {"data_type", t_data_type, false},
        {"format", t_format, false},
        {"dims", t_dims, true},
        {"reshape", t_reshape, false},
        {"is_shape_tensor", NULL, false, TRT_WHY("shape tensors"), true},
        {"allow_ragged_batch", t_ragged, false},
        {"optional", t_optional, false},
        {"is_non_linear_format_io", NULL, false, TRT_WHY("non-linear I/O formats"), true}};
    static const tc_field_t out_tab[] = {
        {"name", t_name, false},
        {"data_type", t_data_type, false},
        {"dims", t_dims, true},
        {"reshape", t_reshape, false},
        {"label_filename", t_label_filename, false},
        {"is_shape_tensor", NULL, false, TRT_WHY("shape tensors"), true},
        {"is_non_linear_format_io", NULL, false, TRT_WHY("non-linear I/O formats"), true}};
    tensor_obj_t x = {.t = &arr[*n], .pos = &pos[*n]};
    size_t mark = push(c, "[%u]", *n);
    int rc;
    x.pos->at = pos_of(f);
    rc = output ? WALK(c, f, "ModelOutput", out_tab, &x) : WALK(c, f, "ModelInput", in_tab, &x);
    if (!rc)
        rc = tensor_done(c, f, &x);
    if (!rc && seen_before(c, output ? SEEN_OUTPUT : SEEN_INPUT, x.t->name))
        rc = bad(c, f, "%s '%s' is listed twice", output ? "output" : "input", x.t->name);
    pop(c, mark);
    (*n)++;
    return rc;
}

static int m_input(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    return tensor(c, f, false, (osv_tc_tensor_t *)t->c.input, t->in_pos, &t->c.n_input);
}

static int m_output(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    return tensor(c, f, true, (osv_tc_tensor_t *)t->c.output, t->out_pos, &t->c.n_output);
}

/* ---- version policy ------------------------------------------------------------------------------------ */

static int latest_num(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    uint64_t v;
    int rc = get_uint(c, f, UINT32_MAX, &v);
    if (!rc && v == 0)
        return bad(c, f, "must be at least 1");
    ((osv_tconfig_t *)o)->c.latest_versions = (uint32_t)v;
    return rc;
}

static int vp_latest(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"num_versions", latest_num, false}};
    osv_tconfig_t *t = o;
    t->c.version_policy = OSV_VERSIONS_LATEST;
    t->c.latest_versions = 1;
    return WALK(c, f, "ModelVersionPolicy.Latest", tab, t);
}

static int vp_all(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"", NULL, false}};
    ((osv_tconfig_t *)o)->c.version_policy = OSV_VERSIONS_ALL;
    return walk(c, f, "ModelVersionPolicy.All", tab, 0, o);
}

static int specific_version(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    int64_t v;
    int rc = get_int(c, f, 0, INT64_MAX, &v);
    if (!rc)
        ((int64_t *)t->c.versions)[t->c.n_versions++] = v;
    return rc;
}

static int vp_specific(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"versions", specific_version, true}};
    osv_tconfig_t *t = o;
    uint32_t n = f->kind == OSV_PBTXT_MESSAGE ? count_named(c->doc, f, "versions") : 0;
    int rc;
    t->c.version_policy = OSV_VERSIONS_SPECIFIC;
    if (!(t->c.versions = osv_tconfig_alloc(t, n, sizeof(int64_t))))
        return no_memory(c);
    if ((rc = WALK(c, f, "ModelVersionPolicy.Specific", tab, t)) != 0)
        return rc;
    return n ? 0 : bad(c, f, "lists no version");
}

static int m_version_policy(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {
        {"latest", vp_latest, false}, {"all", vp_all, false}, {"specific", vp_specific, false}};
    osv_tconfig_t *t = o;
    if (f->kind == OSV_PBTXT_MESSAGE && f->count > 1)
        return bad(c, f, "give one of latest, all or specific");
    t->set |= TC_SET_VERSION_POLICY;
    t->pos[TC_POS_VERSION_POLICY] = pos_of(f);
    return WALK(c, f, "ModelVersionPolicy", tab, t);
}

/* ---- scalars of ModelConfig --------------------------------------------------------------------------- */

static int m_name(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    t->pos[TC_POS_NAME] = pos_of(f);
    return get_str(c, f, &t->c.name);
}

/* A string field that names what runs the model: empty or `only`, else refused with `why`. */
static int only_value(tc_ctx_t *c, const osv_pbtxt_field_t *f, const char **dst, const char *what,
                      const char *only, const char *why)
{
    int rc = get_str(c, f, dst);
    if (!rc && (*dst)[0] && strcmp(*dst, only) != 0)
        return unsupported(c, f, "%s '%s' is not available here: %s", what, *dst, why);
    return rc;
}

#define ONNX_ONLY "this server runs ONNX models (platform \"onnxruntime_onnx\" or backend \"onnxruntime\")"

static int m_platform(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return only_value(c, f, &((osv_tconfig_t *)o)->c.platform, "platform", "onnxruntime_onnx", ONNX_ONLY);
}

static int m_backend(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return only_value(c, f, &((osv_tconfig_t *)o)->c.backend, "backend", "onnxruntime", ONNX_ONLY);
}

static int m_runtime(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return only_value(c, f, &((osv_tconfig_t *)o)->c.runtime, "runtime", "libtriton_onnxruntime.so",
                      "ONNX Runtime is built in");
}

static int m_max_batch_size(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    int64_t v;
    int rc = get_int(c, f, 0, INT32_MAX, &v);
    t->c.max_batch_size = (int32_t)v;
    t->set |= TC_SET_MAX_BATCH_SIZE;
    t->pos[TC_POS_MAX_BATCH_SIZE] = pos_of(f);
    return rc;
}

static int m_default_model_filename(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    int rc = get_str(c, f, &t->c.default_model_filename);
    t->pos[TC_POS_DEFAULT_MODEL_FILENAME] = pos_of(f);
    return rc ? rc : plain_name(c, f, t->c.default_model_filename);
}

/* ---- maps: parameters, metric_tags, cc_model_filenames ---------------------------------------------- */

typedef struct kv_obj {
    osv_tc_kv_t *kv;
    bool model_parameter; /* value is a ModelParameter { string_value } */
    bool has_value;
    tc_pos_t value_pos;
} kv_obj_t;

static int kv_key(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((kv_obj_t *)o)->kv->key);
}

static int param_string_value(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((kv_obj_t *)o)->kv->value);
}

static int kv_value(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"string_value", param_string_value, false}};
    kv_obj_t *x = o;
    x->has_value = true;
    x->value_pos = (tc_pos_t){f->vline, f->vcol};
    if (!x->model_parameter)
        return get_str(c, f, &x->kv->value);
    return WALK(c, f, "ModelParameter", tab, x);
}

/* One map entry {key: ... value: ...} into arr[*n]; duplicate keys are errors. */
static int map_entry(tc_ctx_t *c, const osv_pbtxt_field_t *f, uint32_t what, osv_tc_kv_t *arr, uint32_t *n,
                     bool model_parameter, tc_pos_t *value_pos)
{
    static const tc_field_t tab[] = {{"key", kv_key, false}, {"value", kv_value, false}};
    kv_obj_t x = {.kv = &arr[*n], .model_parameter = model_parameter};
    int rc = WALK(c, f, "map entry", tab, &x);
    if (rc)
        return rc;
    if (!x.kv->key)
        return bad(c, f, "an entry has no key");
    if (!x.kv->value)
        x.kv->value = "";
    if (seen_before(c, what, x.kv->key))
        return bad(c, f, "key '%s' is given twice", x.kv->key);
    if (value_pos)
        *value_pos = x.has_value ? x.value_pos : pos_of(f);
    (*n)++;
    return 0;
}

static int m_metric_tags(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    return map_entry(c, f, SEEN_METRIC_TAG, (osv_tc_kv_t *)t->c.metric_tags, &t->c.n_metric_tags, false,
                     NULL);
}

static int m_cc_model_filenames(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    return map_entry(c, f, SEEN_CC_FILE, (osv_tc_kv_t *)t->c.cc_model_filenames, &t->c.n_cc_model_filenames,
                     false, NULL);
}

/* The ONNX Runtime backend's session parameters, checked as it reads them. */
static int session_param(tc_ctx_t *c, const osv_pbtxt_field_t *f, const osv_tc_kv_t *kv, tc_pos_t vpos)
{
    osv_tconfig_t *t = c->t;
    osv_pbtxt_field_t at = {.line = vpos.line, .col = vpos.col};
    const char *v = kv->value;
    char *end;
    (void)f;
    if (strcmp(kv->key, "intra_op_thread_count") == 0 || strcmp(kv->key, "inter_op_thread_count") == 0) {
        bool intra = strncmp(kv->key, "intra", 5) == 0;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (!*v || *end || errno || n < 0 || n > MAX_THREADS)
            return bad(c, &at, "parameter '%s' must be a thread count from 0 to %d, not '%s'", kv->key,
                       MAX_THREADS, v);
        *(intra ? &t->session.intra_op : &t->session.inter_op) = (int)n;
        t->set |= intra ? TC_SET_INTRA_OP : TC_SET_INTER_OP;
        t->pos[intra ? TC_POS_INTRA_OP : TC_POS_INTER_OP] = vpos;
        return 0;
    }
    if (strcmp(kv->key, "execution_mode") == 0) {
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
            return bad(c, &at,
                       "parameter 'execution_mode' must be \"0\" (sequential) or \"1\" (parallel), not '%s'",
                       v);
        t->session.execution_mode = v[0] - '0';
        t->set |= TC_SET_EXECUTION_MODE;
        t->pos[TC_POS_EXECUTION_MODE] = vpos;
        return 0;
    }
    static const struct {
        const char *key;
        size_t off;
        uint32_t bit;
        int pos;
    } bools[] = {
        {"enable_mem_arena", offsetof(tc_session_t, mem_arena), TC_SET_MEM_ARENA, TC_POS_MEM_ARENA},
        {"enable_mem_pattern", offsetof(tc_session_t, mem_pattern), TC_SET_MEM_PATTERN, TC_POS_MEM_PATTERN},
        {"share_session_between_instances", offsetof(tc_session_t, share_session), TC_SET_SHARE_SESSION,
         TC_POS_SHARE_SESSION}};
    for (size_t i = 0; i < sizeof bools / sizeof *bools; i++) {
        if (strcmp(kv->key, bools[i].key) != 0)
            continue;
        bool on = strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "True") == 0;
        if (!on && strcmp(v, "0") != 0 && strcmp(v, "false") != 0 && strcmp(v, "False") != 0)
            return bad(c, &at, "parameter '%s' must be \"1\"/\"true\" or \"0\"/\"false\", not '%s'", kv->key,
                       v);
        *(bool *)((char *)&t->session + bools[i].off) = on;
        t->set |= bools[i].bit;
        t->pos[bools[i].pos] = vpos;
        return 0;
    }
    if (strcmp(kv->key, "memory.enable_memory_arena_shrinkage") == 0)
        return unsupported(c, &at,
                           "parameter 'memory.enable_memory_arena_shrinkage' is not supported here (runs "
                           "share per-thread run options)");
    if (strcmp(kv->key, "session.use_device_allocator_for_initializers") == 0) {
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
            return bad(c, &at, "parameter '%s' must be \"0\" or \"1\", not '%s'", kv->key, v);
        t->session.device_allocator_for_initializers = v[0] == '1';
    }
    return 0; /* any other parameter is the user's, kept and shown */
}

static int m_parameters(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    tc_pos_t vpos;
    uint32_t i = t->c.n_parameters;
    size_t mark = push(c, "[%u]", i);
    int rc = map_entry(c, f, SEEN_PARAMETER, (osv_tc_kv_t *)t->c.parameters, &t->c.n_parameters, true, &vpos);
    pop(c, mark);
    if (rc)
        return rc;
    mark = push(c, "[\"%s\"]", t->c.parameters[i].key);
    rc = session_param(c, f, &t->c.parameters[i], vpos);
    pop(c, mark);
    return rc;
}

/* ---- optimization ----------------------------------------------------------------------------------------
 */

static int graph_level(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_tconfig_t *t = o;
    int64_t v;
    int rc = get_int(c, f, -1, 2, &v);
    t->c.has_graph_level = true;
    t->c.graph_level = (int32_t)v;
    t->pos[TC_POS_GRAPH_LEVEL] = pos_of(f);
    return rc;
}

static int o_graph(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"level", graph_level, false}};
    return WALK(c, f, "ModelOptimizationPolicy.Graph", tab, o);
}

static int o_priority(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const char *const names[] = {"PRIORITY_DEFAULT", "PRIORITY_MAX", "PRIORITY_MIN"};
    int v, rc = get_enum(c, f, names, 3, &v);
    ((osv_tconfig_t *)o)->c.priority = v;
    return rc;
}

static int cpu_accelerator_name(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    const char *name = NULL;
    int rc = get_str(c, f, &name);
    (void)o;
    return rc ? rc
              : unsupported(
                    c, f,
                    "execution accelerator '%s' is not available: this server runs ONNX Runtime's CPU "
                    "execution provider",
                    name);
}

static int cpu_accelerator(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"name", cpu_accelerator_name, false},
                                     {"parameters", any_message, true}};
    return WALK(c, f, "ExecutionAccelerators.Accelerator", tab, o);
}

static int o_accelerators(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    /* GPU accelerators only apply to GPU instances (there are none here): accepted, no effect. */
    static const tc_field_t tab[] = {{"gpu_execution_accelerator", any_message, true},
                                     {"cpu_execution_accelerator", cpu_accelerator, true}};
    return WALK(c, f, "ModelOptimizationPolicy.ExecutionAccelerators", tab, o);
}

static int pinned_enable(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, o);
}

static int o_pinned(tc_ctx_t *c, const osv_pbtxt_field_t *f, bool *flag)
{
    static const tc_field_t tab[] = {{"enable", pinned_enable, false}};
    *flag = false; /* a message without "enable" is enable: false, as proto3 reads it */
    return WALK(c, f, "ModelOptimizationPolicy.PinnedMemoryBuffer", tab, flag);
}

static int o_input_pinned(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return o_pinned(c, f, &((osv_tconfig_t *)o)->c.input_pinned_memory);
}

static int o_output_pinned(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return o_pinned(c, f, &((osv_tconfig_t *)o)->c.output_pinned_memory);
}

static int o_gather(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    uint64_t v;
    int rc = get_uint(c, f, UINT32_MAX, &v);
    ((osv_tconfig_t *)o)->c.gather_kernel_buffer_threshold = (uint32_t)v;
    return rc;
}

static int o_eager(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, &((osv_tconfig_t *)o)->c.eager_batching);
}

static int m_optimization(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"graph", o_graph, false},
                                     {"priority", o_priority, false},
                                     {"cuda", any_message, false}, /* CUDA graphs and streams: GPU only */
                                     {"execution_accelerators", o_accelerators, false},
                                     {"input_pinned_memory", o_input_pinned, false},
                                     {"output_pinned_memory", o_output_pinned, false},
                                     {"gather_kernel_buffer_threshold", o_gather, false},
                                     {"eager_batching", o_eager, false}};
    return WALK(c, f, "ModelOptimizationPolicy", tab, o);
}

/* ---- dynamic batching and the response cache ---------------------------------------------------------- */

static int qp_action(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const char *const names[] = {"REJECT", "DELAY"};
    int v, rc = get_enum(c, f, names, 2, &v);
    ((osv_queue_policy_t *)o)->timeout_action = (osv_timeout_action_t)v;
    return rc;
}

static int qp_timeout(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_uint(c, f, UINT64_MAX, &((osv_queue_policy_t *)o)->default_timeout_us);
}

static int qp_override(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, &((osv_queue_policy_t *)o)->allow_timeout_override);
}

static int qp_max_queue(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    uint64_t v;
    int rc = get_uint(c, f, UINT32_MAX, &v);
    ((osv_queue_policy_t *)o)->max_queue_size = (uint32_t)v;
    return rc;
}

static int queue_policy(tc_ctx_t *c, const osv_pbtxt_field_t *f, osv_queue_policy_t *qp)
{
    static const tc_field_t tab[] = {{"timeout_action", qp_action, false},
                                     {"default_timeout_microseconds", qp_timeout, false},
                                     {"allow_timeout_override", qp_override, false},
                                     {"max_queue_size", qp_max_queue, false}};
    return WALK(c, f, "ModelQueuePolicy", tab, qp);
}

static int db_preferred(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    osv_dynamic_batching_t *db = o;
    int64_t v;
    int rc = get_int(c, f, 1, INT32_MAX, &v);
    if (!rc)
        ((int32_t *)db->preferred_batch_size)[db->n_preferred++] = (int32_t)v;
    return rc;
}

static int db_delay(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_uint(c, f, UINT64_MAX, &((osv_dynamic_batching_t *)o)->max_queue_delay_us);
}

static int db_order(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, &((osv_dynamic_batching_t *)o)->preserve_ordering);
}

static int db_levels(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_uint(c, f, MAX_PRIORITIES, &((osv_dynamic_batching_t *)o)->priority_levels);
}

static int db_default_level(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_uint(c, f, MAX_PRIORITIES, &((osv_dynamic_batching_t *)o)->default_priority_level);
}

static int db_default_policy(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return queue_policy(c, f, &((osv_dynamic_batching_t *)o)->default_queue_policy);
}

static int pp_key(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_uint(c, f, MAX_PRIORITIES, &((osv_priority_policy_t *)o)->level);
}

static int pp_value(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return queue_policy(c, f, &((osv_priority_policy_t *)o)->policy);
}

static int db_priority_policy(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"key", pp_key, false}, {"value", pp_value, false}};
    osv_dynamic_batching_t *db = o;
    osv_priority_policy_t *pp = (osv_priority_policy_t *)&db->priority_queue_policy[db->n_priority_policies];
    char level[24];
    const char *key;
    int rc = WALK(c, f, "priority_queue_policy entry", tab, pp);
    snprintf(level, sizeof level, "%" PRIu64, pp->level);
    if (!rc && !(key = osv_tconfig_strdup(c->t, level)))
        rc = no_memory(c);
    if (!rc && seen_before(c, SEEN_PRIORITY, key))
        rc = bad(c, f, "priority level %" PRIu64 " is given twice", pp->level);
    db->n_priority_policies++;
    return rc;
}

static int m_dynamic_batching(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"preferred_batch_size", db_preferred, true},
                                     {"max_queue_delay_microseconds", db_delay, false},
                                     {"preserve_ordering", db_order, false},
                                     {"priority_levels", db_levels, false},
                                     {"default_priority_level", db_default_level, false},
                                     {"default_queue_policy", db_default_policy, false},
                                     {"priority_queue_policy", db_priority_policy, true}};
    osv_tconfig_t *t = o;
    osv_dynamic_batching_t *db = &t->c.dynamic_batching;
    int rc;
    if ((rc = need_msg(c, f)) != 0)
        return rc;
    db->enabled = true;
    t->pos[TC_POS_DYNAMIC_BATCHING] = pos_of(f);
    db->preferred_batch_size =
        osv_tconfig_alloc(t, count_named(c->doc, f, "preferred_batch_size"), sizeof(int32_t));
    db->priority_queue_policy =
        osv_tconfig_alloc(t, count_named(c->doc, f, "priority_queue_policy"), sizeof(osv_priority_policy_t));
    if (!db->preferred_batch_size || !db->priority_queue_policy)
        return no_memory(c);
    if ((rc = WALK(c, f, "ModelDynamicBatching", tab, db)) != 0)
        return rc;
    if (db->priority_levels &&
        (db->default_priority_level < 1 || db->default_priority_level > db->priority_levels))
        return bad(c, f,
                   "default_priority_level %" PRIu64 " is not between 1 and priority_levels (%" PRIu64 ")",
                   db->default_priority_level, db->priority_levels);
    for (uint32_t i = 0; i < db->n_priority_policies; i++)
        if (db->priority_queue_policy[i].level < 1 ||
            db->priority_queue_policy[i].level > db->priority_levels)
            return bad(c, f,
                       "priority_queue_policy names level %" PRIu64 ", outside 1 to priority_levels (%" PRIu64
                       ")",
                       db->priority_queue_policy[i].level, db->priority_levels);
    return 0;
}

static int cache_enable(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_bool(c, f, &((osv_response_cache_t *)o)->enable);
}

static int m_response_cache(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"enable", cache_enable, false}};
    return WALK(c, f, "ModelResponseCache", tab, &((osv_tconfig_t *)o)->c.response_cache);
}

static int m_transaction_policy(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {
        {"decoupled", NULL, false, "decoupled models (several responses per request) are not supported here",
         true}};
    return WALK(c, f, "ModelTransactionPolicy", tab, o);
}

/* ---- instance groups ------------------------------------------------------------------------------------
 */

static int g_name(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((osv_tc_group_t *)o)->name);
}

static int g_kind(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const char *const names[] = {"KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"};
    int v, rc = get_enum(c, f, names, 4, &v);
    if (!rc && v == OSV_KIND_GPU)
        return unsupported(
            c, f,
            "KIND_GPU instances need a GPU execution provider, which this server does not have: "
            "use KIND_CPU");
    ((osv_tc_group_t *)o)->kind = (osv_instance_kind_t)v;
    return rc;
}

static int g_count(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    int64_t v;
    int rc = get_int(c, f, 0, c->lim->max_instances, &v);
    ((osv_tc_group_t *)o)->count = (int32_t)v;
    return rc;
}

static int g_host_policy(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((osv_tc_group_t *)o)->host_policy);
}

static int m_instance_group(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {
        {"name", g_name, false},
        {"kind", g_kind, false},
        {"count", g_count, false},
        {"gpus", NULL, true, "this server has no GPUs: remove 'gpus' and use kind: KIND_CPU", false},
        {"rate_limiter", any_message, false},
        {"secondary_devices", NULL, true, "secondary devices are not supported here", false},
        {"profile", NULL, true, TRT_WHY("optimization profiles"), false},
        {"passive", NULL, false, "passive instances are not supported here", true},
        {"host_policy", g_host_policy, false}};
    osv_tconfig_t *t = o;
    osv_tc_group_t *g = (osv_tc_group_t *)&t->c.instance_group[t->c.n_instance_group];
    size_t mark = push(c, "[%u]", t->c.n_instance_group);
    int rc;
    if (t->c.n_instance_group == 0)
        t->pos[TC_POS_INSTANCE_GROUP] = pos_of(f);
    g->kind = OSV_KIND_AUTO;
    rc = WALK(c, f, "ModelInstanceGroup", tab, g);
    pop(c, mark);
    t->c.n_instance_group++;
    return rc;
}

/* ---- model warm-up ----------------------------------------------------------------------------------------
 */

typedef struct warmup_input_obj {
    osv_tc_warmup_input_t *in;
    int sources;
    bool has_dtype;
} warmup_input_obj_t;

static int wi_dtype(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    warmup_input_obj_t *x = o;
    x->has_dtype = true;
    return get_dtype(c, f, &x->in->dtype);
}

static int wi_dims(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    warmup_input_obj_t *x = o;
    return add_dim(c, f, 0, x->in->dims, &x->in->rank);
}

static int wi_source(tc_ctx_t *c, const osv_pbtxt_field_t *f, warmup_input_obj_t *x, osv_warmup_source_t s)
{
    bool b;
    x->sources++;
    x->in->source = s;
    return get_bool(c, f, &b); /* the value is not looked at (model_config.proto): being set is enough */
}

static int wi_zero(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return wi_source(c, f, o, OSV_WARMUP_ZERO);
}

static int wi_random(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return wi_source(c, f, o, OSV_WARMUP_RANDOM);
}

static int wi_file(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    warmup_input_obj_t *x = o;
    int rc = get_str(c, f, &x->in->file);
    x->sources++;
    x->in->source = OSV_WARMUP_FILE;
    return rc ? rc : plain_name(c, f, x->in->file);
}

static int wi_value(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"data_type", wi_dtype, false},
                                     {"dims", wi_dims, true},
                                     {"zero_data", wi_zero, false},
                                     {"random_data", wi_random, false},
                                     {"input_data_file", wi_file, false}};
    warmup_input_obj_t x = {.in = o};
    int rc = WALK(c, f, "ModelWarmup.Input", tab, &x);
    if (rc)
        return rc;
    if (!x.has_dtype)
        return bad(c, f, "has no data_type");
    if (x.sources != 1)
        return bad(c, f, "needs exactly one of zero_data, random_data or input_data_file (it has %d)",
                   x.sources);
    return 0;
}

static int wi_key(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((osv_tc_warmup_input_t *)o)->name);
}

static int w_input(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"key", wi_key, false}, {"value", wi_value, false}};
    osv_tc_warmup_t *w = o;
    osv_tc_warmup_input_t *in = (osv_tc_warmup_input_t *)&w->inputs[w->n_inputs];
    int rc = WALK(c, f, "ModelWarmup inputs entry", tab, in);
    if (!rc && !in->name)
        rc = bad(c, f, "an entry has no key (the input's name)");
    if (!rc && !in->dtype)
        rc = bad(c, f, "input '%s' has no value", in->name);
    if (!rc && seen_before(c, SEEN_WARMUP + (uint32_t)(w - c->t->c.model_warmup), in->name))
        rc = bad(c, f, "input '%s' is given twice", in->name);
    w->n_inputs++;
    return rc;
}

static int w_name(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    return get_str(c, f, &((osv_tc_warmup_t *)o)->name);
}

static int w_batch_size(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    uint64_t v;
    int rc = get_uint(c, f, UINT32_MAX, &v);
    if (!rc && v == 0)
        return bad(c, f, "must be at least 1");
    ((osv_tc_warmup_t *)o)->batch_size = (uint32_t)v;
    return rc;
}

static int w_count(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    uint64_t v;
    int rc = get_uint(c, f, c->lim->max_warmup_runs, &v);
    ((osv_tc_warmup_t *)o)->count = (uint32_t)v;
    return rc;
}

static int m_model_warmup(tc_ctx_t *c, const osv_pbtxt_field_t *f, void *o)
{
    static const tc_field_t tab[] = {{"name", w_name, false},
                                     {"batch_size", w_batch_size, false},
                                     {"inputs", w_input, true},
                                     {"count", w_count, false}};
    osv_tconfig_t *t = o;
    osv_tc_warmup_t *w = (osv_tc_warmup_t *)&t->c.model_warmup[t->c.n_model_warmup];
    size_t mark = push(c, "[%u]", t->c.n_model_warmup);
    int rc = need_msg(c, f);
    w->batch_size = 1;
    w->name = "";
    t->warm_pos[t->c.n_model_warmup] = pos_of(f);
    if (t->c.n_model_warmup == 0)
        t->pos[TC_POS_MODEL_WARMUP] = pos_of(f);
    if (!rc && !(w->inputs = osv_tconfig_alloc(t, count_named(c->doc, f, "inputs"), sizeof *w->inputs)))
        rc = no_memory(c);
    if (!rc)
        rc = WALK(c, f, "ModelWarmup", tab, w);
    pop(c, mark);
    t->c.n_model_warmup++;
    return rc;
}

/* ---- the whole ModelConfig ------------------------------------------------------------------------------
 */

static const tc_field_t model_config_fields[] = {
    {"name", m_name, false},
    {"platform", m_platform, false},
    {"backend", m_backend, false},
    {"runtime", m_runtime, false},
    {"version_policy", m_version_policy, false},
    {"max_batch_size", m_max_batch_size, false},
    {"input", m_input, true},
    {"output", m_output, true},
    {"batch_input", NULL, true, BATCH_IO_WHY, false},
    {"batch_output", NULL, true, BATCH_IO_WHY, false},
    {"optimization", m_optimization, false},
    {"dynamic_batching", m_dynamic_batching, false},
    {"sequence_batching", NULL, false,
     "sequence batching is not supported for ONNX models here (stateful models take their state as inputs)",
     false},
    {"ensemble_scheduling", NULL, false, "ensembles are not supported here: this server runs ONNX models",
     false},
    {"instance_group", m_instance_group, true},
    {"default_model_filename", m_default_model_filename, false},
    {"cc_model_filenames", m_cc_model_filenames, true},
    {"metric_tags", m_metric_tags, true},
    {"parameters", m_parameters, true},
    {"model_warmup", m_model_warmup, true},
    {"model_operations", NULL, false, "custom operator libraries are not loaded by this server", false},
    {"model_transaction_policy", m_transaction_policy, false},
    {"model_repository_agents", NULL, false, "repository agents are not supported here", false},
    {"response_cache", m_response_cache, false},
    {"model_metrics", any_message, false},
};

/* Arrays for the repeated top-level fields, sized by counting them. */
static int size_arrays(tc_ctx_t *c, const osv_pbtxt_field_t *root)
{
    osv_tconfig_t *t = c->t;
    const osv_pbtxt_doc_t *d = c->doc;
    uint32_t ni = count_named(d, root, "input"), no = count_named(d, root, "output");
    t->c.input = osv_tconfig_alloc(t, ni, sizeof(osv_tc_tensor_t));
    t->c.output = osv_tconfig_alloc(t, no, sizeof(osv_tc_tensor_t));
    t->in_pos = osv_tconfig_alloc(t, ni, sizeof(tc_tensor_pos_t));
    t->out_pos = osv_tconfig_alloc(t, no, sizeof(tc_tensor_pos_t));
    t->c.instance_group =
        osv_tconfig_alloc(t, count_named(d, root, "instance_group"), sizeof(osv_tc_group_t));
    t->c.parameters = osv_tconfig_alloc(t, count_named(d, root, "parameters"), sizeof(osv_tc_kv_t));
    t->c.metric_tags = osv_tconfig_alloc(t, count_named(d, root, "metric_tags"), sizeof(osv_tc_kv_t));
    t->c.cc_model_filenames =
        osv_tconfig_alloc(t, count_named(d, root, "cc_model_filenames"), sizeof(osv_tc_kv_t));
    t->c.model_warmup = osv_tconfig_alloc(t, count_named(d, root, "model_warmup"), sizeof(osv_tc_warmup_t));
    t->warm_pos = osv_tconfig_alloc(t, count_named(d, root, "model_warmup"), sizeof(tc_pos_t));
    if (!t->c.input || !t->c.output || !t->in_pos || !t->out_pos || !t->c.instance_group ||
        !t->c.parameters || !t->c.metric_tags || !t->c.cc_model_filenames || !t->c.model_warmup ||
        !t->warm_pos)
        return no_memory(c);
    return 0;
}

/* Triton's defaults for what a config does not say (completion fills the rest). */
static void defaults(osv_tconfig_t *t)
{
    t->c.name = t->c.platform = t->c.backend = t->c.runtime = "";
    t->c.default_model_filename = "";
    t->c.version_policy = OSV_VERSIONS_LATEST;
    t->c.latest_versions = 1;
    t->c.input_pinned_memory = t->c.output_pinned_memory = true;
    t->session.mem_arena = t->session.mem_pattern = true;
}

/* Parses text[0..len) and maps it onto t. */
static int parse_text(osv_tconfig_t *t, const char *text, size_t len, const char *model_name,
                      const osv_tconfig_limits_t *lim, osv_err_t *err)
{
    osv_pbtxt_limits_t pl;
    osv_pbtxt_doc_t doc;
    osv_pbtxt_err_t perr;
    tc_ctx_t c = {.t = t, .lim = lim, .doc = &doc, .err = err};
    int rc;
    osv_pbtxt_limits_default(&pl);
    pl.max_bytes = lim->max_bytes;
    pl.max_depth = lim->max_depth;
    if (osv_pbtxt_parse(text, len, &pl, &doc, &perr) != 0)
        return perr.line
                   ? osv_err_set(err, OSV_EPARSE, "%s:%u:%u: %s", t->path, perr.line, perr.col, perr.msg)
                   : osv_err_set(err, OSV_EPARSE, "%s: %s", t->path, perr.msg);
    t->present = true;
    for (c.seen_mask = 1; c.seen_mask < 2 * (size_t)doc.n; c.seen_mask <<= 1)
        ;
    if (!(c.seen = osv_tconfig_alloc(t, c.seen_mask, sizeof *c.seen))) {
        osv_pbtxt_free(&doc);
        return osv_err_set(err, OSV_ENOMEM, "out of memory reading %s", t->path);
    }
    c.seen_mask--;
    if ((rc = size_arrays(&c, &doc.fields[0])) == 0)
        rc = walk(&c, &doc.fields[0], "ModelConfig", model_config_fields,
                  sizeof model_config_fields / sizeof *model_config_fields, t);
    if (!rc && t->c.name[0] && strcmp(t->c.name, model_name) != 0)
        rc = osv_err_set(err, OSV_EINVAL,
                         "%s:%u:%u: name: '%s' does not match the model's directory name '%s'", t->path,
                         t->pos[TC_POS_NAME].line, t->pos[TC_POS_NAME].col, t->c.name, model_name);
    osv_pbtxt_free(&doc);
    return rc;
}

static osv_tconfig_t *tconfig_new(const char *path)
{
    osv_tconfig_t *t = osv_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    osv_arena_init(&t->arena, ARENA_CHUNK, ARENA_LIMIT);
    defaults(t);
    if (!(t->path = osv_tconfig_strdup(t, path))) {
        osv_tconfig_free(t);
        return NULL;
    }
    return t;
}

int osv_tconfig_from_text(const char *text, size_t len, const char *path, const char *model_name,
                          const osv_tconfig_limits_t *lim, osv_tconfig_t **out, osv_err_t *err)
{
    osv_tconfig_t *t = tconfig_new(path);
    int rc;
    if (!t)
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    if ((rc = parse_text(t, text, len, model_name, lim, err)) != 0) {
        osv_tconfig_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int osv_tconfig_read(const char *dir, const char *model_name, const osv_tconfig_limits_t *lim,
                     osv_tconfig_t **out, osv_err_t *err)
{
    char path[PATH_MAX], *text = NULL;
    struct stat st;
    size_t len = 0;
    int rc;
    snprintf(path, sizeof path, "%s/config.pbtxt", dir ? dir : ".");
    if (dir && (stat(path, &st) == 0 || errno != ENOENT)) {
        if ((rc = osv_read_file(path, lim->max_bytes, &text, &len, err)) != 0)
            return rc;
        rc = osv_tconfig_from_text(text, len, path, model_name, lim, out, err);
        osv_free(text);
        return rc;
    }
    if (!(*out = tconfig_new(path)))
        return osv_err_set(err, OSV_ENOMEM, "out of memory");
    return 0;
}

void osv_tconfig_free(osv_tconfig_t *t)
{
    if (!t)
        return;
    osv_arena_free(&t->arena);
    osv_free(t);
}

void osv_tconfig_select_versions(const osv_tconfig_t *t, const int64_t *versions, uint32_t n, bool *selected)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!t->present || t->c.version_policy == OSV_VERSIONS_ALL) {
            selected[i] = true;
        } else if (t->c.version_policy == OSV_VERSIONS_LATEST) {
            selected[i] = n - i <= t->c.latest_versions; /* versions ascend */
        } else {
            selected[i] = false;
            for (uint32_t k = 0; k < t->c.n_versions; k++)
                selected[i] |= t->c.versions[k] == versions[i];
        }
    }
}
