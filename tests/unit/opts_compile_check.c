/* opts_compile_check.c — compiled, not run, by tests/support/expect_compile_errors.cmake: as is it
 * must compile; with each OSV_BAD_* defined, the option table's compile-time checks must refuse it
 * (an option whose kind writes more, or other, than its field holds). */
#include <stdbool.h>
#include <stdint.h>

#include "opts.h"

typedef struct cfg {
    bool flag;
    int port;
    uint32_t n32;
    uint64_t ns;
    double ratio;
    const char *name;
} cfg_t;

#define OSV_OPT_STRUCT cfg_t
const osv_opt_t table[] = {
    OSV_OPT_FLAG("flag", flag, "ok"),
    OSV_OPT_COUNT("port", port, 0, 65535, NULL, "N", "ok"),
    OSV_OPT_DURATION("wait-us", ns, OSV_OPT_US, OSV_OPT_NS, 0, 1000, NULL, "US", "ok"),
#ifdef OSV_BAD_FLAG_ON_INT /* a FLAG writes a bool: 1 byte where 4 are expected, or 4 over 1 */
    OSV_OPT_FLAG("bad", port, "bad"),
#endif
#ifdef OSV_BAD_COUNT_ON_BOOL
    OSV_OPT_COUNT("bad", flag, 0, 1, NULL, "N", "bad"),
#endif
#ifdef OSV_BAD_RANGE_BEYOND_FIELD /* 2^32 does not fit in a uint32_t */
    OSV_OPT_COUNT("bad", n32, 0, 1ull << 32, NULL, "N", "bad"),
#endif
#ifdef OSV_BAD_DURATION_OVERFLOWS /* UINT64_MAX µs overflows once in ns */
    OSV_OPT_DURATION("bad", ns, OSV_OPT_US, OSV_OPT_NS, 0, UINT64_MAX, NULL, "US", "bad"),
#endif
#ifdef OSV_BAD_DURATION_UNIT /* a field in seconds cannot hold milliseconds */
    OSV_OPT_DURATION("bad", ns, OSV_OPT_MS, OSV_OPT_S, 0, 1000, NULL, "MS", "bad"),
#endif
#ifdef OSV_BAD_STRING_ON_DOUBLE
    OSV_OPT_STRING("bad", ratio, "X", "bad"),
#endif
#ifdef OSV_BAD_RATIO_ON_STRING
    OSV_OPT_RATIO("bad", name, "R", "bad"),
#endif
};
