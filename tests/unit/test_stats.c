/* test_stats.c — sharded statistics: concurrent recording sums exactly; histogram buckets. */
#include <pthread.h>

#include "testutil.h"

#define THREADS 6
#define ROUNDS  50000

static void *recorder(void *arg)
{
    osv_stats_t *s = arg;
    for (int i = 0; i < ROUNDS; i++) {
        osv_stats_record_phase(s, OSV_PHASE_COMPUTE_INFER, 1000);
        osv_stats_record_outcome(s, i % 10 == 0 ? OSV_OUTCOME_INVALID : OSV_OUTCOME_SUCCESS, 2000);
        osv_stats_record_exec(s, 2);
        osv_stats_record_bind(s, OSV_DIR_INPUT, i % 4 ? OSV_COPY_NONE : OSV_COPY_MISALIGNED, i % 4 ? 0 : 64);
    }
    return NULL;
}

static void concurrent_sums_are_exact(void **state)
{
    osv_stats_t *s = osv_stats_new();
    pthread_t th[THREADS];
    osv_stats_snapshot_t snap;
    const uint64_t total = (uint64_t)THREADS * ROUNDS;
    (void)state;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, recorder, s);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    osv_stats_snapshot(s, &snap);
    assert_int_equal(snap.phase[OSV_PHASE_COMPUTE_INFER].count, total);
    assert_int_equal(snap.phase[OSV_PHASE_COMPUTE_INFER].ns, total * 1000);
    assert_int_equal(snap.outcomes[OSV_OUTCOME_SUCCESS] + snap.outcomes[OSV_OUTCOME_INVALID], total);
    assert_int_equal(snap.outcomes[OSV_OUTCOME_INVALID], total / 10);
    assert_int_equal(snap.success.count, total - total / 10);
    assert_int_equal(snap.fail.ns, (total / 10) * 2000);
    assert_int_equal(snap.execution_count, total);
    assert_int_equal(snap.inference_count, 2 * total);
    assert_int_equal(snap.bind[OSV_DIR_INPUT][OSV_COPY_MISALIGNED], total / 4);
    assert_int_equal(snap.copied_bytes[OSV_COPY_MISALIGNED], (total / 4) * 64);
    assert_true(snap.last_inference_ms > 1600000000000ull);
    osv_stats_free(s);
}

static void histogram_buckets(void **state)
{
    osv_stats_t *s = osv_stats_new();
    osv_stats_snapshot_t snap;
    const double *b = osv_hist_bounds();
    (void)state;
    assert_true(b[0] <= 10e-6 + 1e-12);
    assert_true(b[OSV_HIST_BUCKETS - 1] >= 10.0);
    for (int i = 1; i < OSV_HIST_BUCKETS; i++)
        assert_true(b[i] > b[i - 1]);
    osv_stats_record_phase(s, OSV_PHASE_REQUEST, 10000);   /* exactly on the 10 µs bound: le bucket 0 */
    osv_stats_record_phase(s, OSV_PHASE_REQUEST, 10001);   /* just above: bucket 1 */
    osv_stats_record_phase(s, OSV_PHASE_REQUEST, 3000000); /* 3 ms: bucket of 5 ms */
    osv_stats_record_phase(s, OSV_PHASE_REQUEST, 100000000000ull); /* 100 s: +Inf */
    osv_stats_snapshot(s, &snap);
    assert_int_equal(snap.hist[OSV_PHASE_REQUEST][0], 1);
    assert_int_equal(snap.hist[OSV_PHASE_REQUEST][1], 1);
    assert_int_equal(snap.hist[OSV_PHASE_REQUEST][8], 1); /* bounds[8] = 5 ms */
    assert_int_equal(snap.hist[OSV_PHASE_REQUEST][OSV_HIST_BUCKETS], 1);
    assert_string_equal(osv_copy_reason_name(OSV_COPY_NONE), "zero_copy");
    assert_string_equal(osv_copy_reason_name(OSV_COPY_MISALIGNED), "misaligned");
    assert_string_equal(osv_outcome_name(OSV_OUTCOME_REJECTED), "rejected");
    osv_stats_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_sums_are_exact),
        cmocka_unit_test(histogram_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
