/* fake_ort.c — a stand-in "libonnxruntime" that only knows an old C API version, so the test can
 * prove ortserve refuses it with a clear message instead of crashing. */
#include <stddef.h>
#include <stdint.h>

typedef struct fake_api_base {
    const void *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} fake_api_base_t;

static const void *get_api(uint32_t version)
{
    (void)version;
    return NULL; /* "this library does not support that API version" */
}

static const char *get_version(void)
{
    return "1.10.0";
}

static const fake_api_base_t base = {get_api, get_version};

__attribute__((visibility("default"))) const fake_api_base_t *OrtGetApiBase(void);
const fake_api_base_t *OrtGetApiBase(void)
{
    return &base;
}
