/* test_base64.c — base64 decoding of JSON-carried images: alphabets, padding, whitespace and JSON
 * escapes, and every malformed form rejected without writing past the buffer. */
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "util/base64.h"

static int dec(const char *s, uint8_t *out, uint64_t cap, uint64_t *n)
{
    return osv_b64_decode(s, strlen(s), out, cap, n);
}

static void decodes_standard_and_url_safe(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"QQ==", "A"},
        {"QQ", "A"},
        {"QUI=", "AB"},
        {"QUI", "AB"},
        {"QUJD", "ABC"},
        {"QUJDRA==", "ABCD"},
        {"Pz8+", "?\?>"},
        {"Pz8-", "?\?>"},
        {"P/8_", "?\xff?"},
        {"QU\nJD", "ABC"},
        {"QU\\nJD\\r", "ABC"},
        {" Q U J D ", "ABC"},
        {"P\\/8_", "?\xff?"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t out[16];
        uint64_t n = 99;
        assert_int_equal(dec(cases[i].in, out, sizeof out, &n), 0);
        assert_int_equal(n, strlen(cases[i].out));
        if (n)
            assert_memory_equal(out, cases[i].out, n);
        assert_true(n <= osv_b64_max(strlen(cases[i].in)));
    }
}

static void rejects_malformed(void **state)
{
    static const char *bad[] = {"Q",     "QUJDR", "Q===",  "=QUJ", "QQ=a", "QQ==QQ==", "QU@D",
                                "QUJD=", "QQ=",   "QU\\x", "QU\\", "Q\"U", "QUJD\x80"};
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint8_t out[16];
        uint64_t n = 0;
        assert_int_equal(dec(bad[i], out, sizeof out, &n), -1);
    }
}

static void never_writes_past_cap(void **state)
{
    uint8_t out[8];
    uint64_t n = 0;
    (void)state;
    memset(out, 0xee, sizeof out);
    assert_int_equal(dec("QUJDREVG", out, 5, &n), -1); /* 6 bytes into 5 */
    assert_int_equal(out[5], 0xee);
    assert_int_equal(dec("QUJDREU", out, 4, &n), -1); /* 5 bytes: tail of 2 does not fit */
    assert_int_equal(out[4], 0xee);
    assert_int_equal(dec("QUJDREU", out, 5, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "ABCDE", 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_standard_and_url_safe),
        cmocka_unit_test(rejects_malformed),
        cmocka_unit_test(never_writes_past_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
