/* test_pool.c — the slot pool: layout, alignment, bounds, exhaustion, double release, statistics,
 * model hints, the default budget under a (fake) cgroup limit, and acquire/release storms from
 * many threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "util/sanitize.h"

static osv_pool_t *make_pool(uint64_t min, uint64_t max, const uint32_t *counts, uint32_t n)
{
    osv_pool_opts_t o = {.min_slot = min,
                         .max_slot = max,
                         .growth = 4,
                         .counts = counts,
                         .n_counts = n,
                         .total_bytes = 1ull << 30};
    osv_pool_t *p = NULL;
    osv_err_t err;
    OSV_ASSERT_OK(osv_pool_create(&o, &p, &err), &err);
    return p;
}

static void classes_and_alignment(void **state)
{
    uint32_t counts[] = {8, 4, 2};
    osv_pool_t *p = make_pool(4096, 65536, counts, 3);
    osv_pool_stats_t st;
    osv_slot_t s[14];
    (void)state;
    osv_pool_get_stats(p, &st);
    assert_int_equal(st.n_classes, 3);
    assert_int_equal(st.cls[0].slot_size, 4096);
    assert_int_equal(st.cls[1].slot_size, 16384);
    assert_int_equal(st.cls[2].slot_size, 65536);
    assert_int_equal(st.total_bytes, 8 * 4096 + 4 * 16384 + 2 * 65536);
    assert_int_equal(osv_pool_max_slot(p), 65536);
    for (int i = 0; i < 14; i++) {
        assert_int_equal(osv_pool_acquire(p, 100, &s[i]), 0); /* small requests spill upward */
        assert_int_equal((uintptr_t)s[i].base % OSV_SLOT_ALIGN, 0);
        memset(s[i].base, i, s[i].cap); /* every byte of every slot is writable */
    }
    for (int i = 0; i < 14; i++)
        for (int j = i + 1; j < 14; j++)
            assert_true(s[i].base + s[i].cap <= s[j].base || s[j].base + s[j].cap <= s[i].base);
    for (int i = 0; i < 14; i++)
        osv_pool_release(p, &s[i]);
    osv_pool_destroy(p);
}

static void exhaustion_and_too_big(void **state)
{
    uint32_t counts[] = {2, 1};
    osv_pool_t *p = make_pool(4096, 16384, counts, 2);
    osv_slot_t a, b, c, d;
    osv_pool_stats_t st;
    (void)state;
    assert_int_equal(osv_pool_acquire(p, 20000, &a), OSV_ETOOBIG);
    assert_int_equal(osv_pool_acquire(p, 16384, &a), 0);
    assert_int_equal(osv_pool_acquire(p, 5000, &b), OSV_EBUSY); /* the only 16K slot is taken */
    assert_int_equal(osv_pool_acquire(p, 4096, &b), 0);
    assert_int_equal(osv_pool_acquire(p, 1, &c), 0);
    assert_int_equal(osv_pool_acquire(p, 1, &d), OSV_EBUSY);
    osv_pool_get_stats(p, &st);
    assert_int_equal(st.cls[0].in_use, 2);
    assert_int_equal(st.cls[1].in_use, 1);
    assert_int_equal(st.cls[0].failed, 1);
    assert_int_equal(st.cls[1].failed, 1);
    assert_int_equal(st.in_use_bytes, 2 * 4096 + 16384);
    osv_pool_release(p, &c);
    assert_int_equal(osv_pool_acquire(p, 1, &d), 0); /* released slot is reusable */
    osv_pool_release(p, &a);
    osv_pool_release(p, &b);
    osv_pool_release(p, &d);
    osv_pool_get_stats(p, &st);
    assert_int_equal(st.cls[0].in_use, 0);
    assert_int_equal(st.cls[0].high_water, 2);
    assert_int_equal(st.cls[1].high_water, 1);
    assert_int_equal(st.cls[0].acquires, 3);
    osv_pool_destroy(p);
}

static void bounds_are_checked(void **state)
{
    uint32_t counts[] = {1};
    osv_pool_t *p = make_pool(4096, 4096, counts, 1);
    osv_slot_t s;
    void *ptr;
    (void)state;
    assert_int_equal(osv_pool_acquire(p, 4096, &s), 0);
    assert_int_equal(osv_slot_range(&s, 0, 4096, &ptr), 0);
    assert_ptr_equal(ptr, s.base);
    assert_int_equal(osv_slot_range(&s, 4000, 96, &ptr), 0);
    assert_int_equal(osv_slot_range(&s, 4000, 97, &ptr), OSV_ELIMIT);
    assert_int_equal(osv_slot_range(&s, 4097, 0, &ptr), OSV_ELIMIT);
    assert_int_equal(osv_slot_range(&s, UINT64_MAX, 2, &ptr), OSV_ELIMIT); /* offset + len overflows */
    assert_int_equal(osv_slot_range(&s, 1, UINT64_MAX, &ptr), OSV_ELIMIT);
    osv_pool_release(p, &s);
    osv_pool_destroy(p);
}

static void double_release_is_detected(void **state)
{
    uint32_t counts[] = {2};
    osv_pool_t *p = make_pool(4096, 4096, counts, 1);
    osv_slot_t s, copy, a, b, c;
    osv_pool_stats_t st;
    (void)state;
    assert_int_equal(osv_pool_acquire(p, 10, &s), 0);
    copy = s;
    osv_pool_release(p, &s);
    osv_pool_release(p, &copy); /* same slot again */
    assert_int_equal(osv_pool_bad_releases(p), 1);
    osv_slot_t forged = {.base = (uint8_t *)&st, .cap = 4096, .cls = 0, .idx = 1};
    osv_pool_release(p, &forged);
    assert_int_equal(osv_pool_bad_releases(p), 2);
    /* The free list was not corrupted: exactly two slots can be taken. */
    assert_int_equal(osv_pool_acquire(p, 10, &a), 0);
    assert_int_equal(osv_pool_acquire(p, 10, &b), 0);
    assert_int_equal(osv_pool_acquire(p, 10, &c), OSV_EBUSY);
    assert_ptr_not_equal(a.base, b.base);
    osv_pool_get_stats(p, &st);
    assert_int_equal(st.cls[0].in_use, 2);
    osv_pool_release(p, &a);
    osv_pool_release(p, &b);
    osv_pool_destroy(p);
}

static void budget_layout_without_counts(void **state)
{
    osv_pool_opts_t o = {.total_bytes = 16ull << 20, .min_slot = 4096, .max_slot = 64ull << 20, .growth = 4};
    osv_pool_t *p = NULL;
    osv_pool_stats_t st;
    osv_err_t err;
    (void)state;
    OSV_ASSERT_OK(osv_pool_create(&o, &p, &err), &err);
    osv_pool_get_stats(p, &st);
    assert_true(st.total_bytes <= o.total_bytes);
    for (uint32_t i = 0; i < st.n_classes; i++)
        assert_true(st.cls[i].slots >= 1);
    /* 16 MiB cannot hold a 64 MiB slot: the largest class shrinks to what fits. */
    assert_true(osv_pool_max_slot(p) <= 16ull << 20);
    assert_true(osv_pool_max_slot(p) >= 4ull << 20);
    osv_pool_destroy(p);
    o.total_bytes = 1000; /* smaller than one slot */
    assert_int_equal(osv_pool_create(&o, &p, &err), OSV_EINVAL);
    assert_true(osv_pool_default_budget() >= 16ull << 20);
    assert_true(osv_pool_default_budget() <= 4ull << 30);
}

/* The plan reserves the budget asked for, to within the smallest slot of a class that is not full (at
 * 4096 slots), at most 4 KiB at the usual budgets: the 4 KiB and 16 KiB classes
 * stop at 4096 slots (16 and 64 MiB) and leave the rest of their share to the others, and what whole
 * slots leave goes to the largest classes it holds (--pool-bytes 512M once reserved 464 MiB, the
 * default 4 GiB budget 2.83 GiB). */
static void budget_is_planned_whole(void **state)
{
    static const uint64_t budgets[] = {1ull << 20, 24ull << 20,          100ull << 20, 512ull << 20,
                                       1ull << 30, (3ull << 30) + 12345, 4ull << 30};
    const uint64_t hints[] = {602112 + 1024, 4000, 606112};
    (void)state;
    for (size_t i = 0; i < sizeof budgets / sizeof *budgets; i++) {
        for (int hinted = 0; hinted < 2; hinted++) {
            osv_pool_opts_t o = {
                .total_bytes = budgets[i], .hints = hinted ? hints : NULL, .n_hints = hinted ? 3 : 0};
            osv_pool_t *p = NULL;
            osv_pool_stats_t st;
            osv_err_t err;
            uint64_t sum = 0, room = UINT64_MAX; /* the smallest slot of a class not yet full */
            OSV_ASSERT_OK(osv_pool_create(&o, &p, &err), &err);
            osv_pool_get_stats(p, &st);
            for (uint32_t c = st.n_classes; c-- > 0;) {
                assert_true(st.cls[c].slots >= 1 && st.cls[c].slots <= 4096);
                sum += st.cls[c].slot_size * st.cls[c].slots;
                room = st.cls[c].slots < 4096 ? st.cls[c].slot_size : room;
            }
            assert_int_equal(sum, st.total_bytes);
            assert_int_equal(osv_pool_budget(p), budgets[i]);
            if (st.total_bytes > budgets[i] || budgets[i] - st.total_bytes >= room)
                fail_msg("budget %llu%s: %llu planned", (unsigned long long)budgets[i],
                         hinted ? " (hinted)" : "", (unsigned long long)st.total_bytes);
            osv_pool_destroy(p);
        }
    }
}

/* Slots of a size class (0 when the pool has no such class). */
static uint32_t slots_of(const osv_pool_stats_t *st, uint64_t size)
{
    for (uint32_t i = 0; i < st->n_classes; i++)
        if (st->cls[i].slot_size == size)
            return st->cls[i].slots;
    return 0;
}

/* Hints (a MobileNetV2-sized binary body and its small output): the classes they fall in get the
 * same, larger number of slots; the largest slot is the one the plan without hints has; the budget
 * holds. */
static void hints_favour_the_classes_requests_need(void **state)
{
    const uint64_t hints[] = {602112 + 1024, 4000, 606112};
    osv_pool_opts_t o = {.total_bytes = 24ull << 20, .min_slot = 4096, .max_slot = 64ull << 20, .growth = 4};
    osv_pool_t *plain = NULL, *hinted = NULL;
    osv_pool_stats_t a, b;
    osv_slot_t s[16];
    osv_err_t err;
    (void)state;
    OSV_ASSERT_OK(osv_pool_create(&o, &plain, &err), &err);
    o.hints = hints;
    o.n_hints = 3;
    OSV_ASSERT_OK(osv_pool_create(&o, &hinted, &err), &err);
    osv_pool_get_stats(plain, &a);
    osv_pool_get_stats(hinted, &b);
    assert_true(b.total_bytes <= o.total_bytes);
    assert_int_equal(osv_pool_max_slot(hinted), osv_pool_max_slot(plain));
    /* 24 MiB: equal shares give the 1 MiB class 3 slots (and the 5 MiB whole slots leave a 4 MiB and a
     * 1 MiB slot); the hints give it at least 12. */
    assert_true(slots_of(&a, 1u << 20) <= 4);
    assert_true(slots_of(&b, 1u << 20) >= 12);
    /* The 1 MiB slots are really there: 12 bodies at once. */
    for (int i = 0; i < 12; i++)
        assert_int_equal(osv_pool_acquire(hinted, 602112 + 1024, &s[i]), 0);
    for (int i = 0; i < 12; i++)
        osv_pool_release(hinted, &s[i]);
    osv_pool_destroy(plain);
    osv_pool_destroy(hinted);
    /* Hinted classes the plain plan already fills to hint_slots change nothing. */
    const uint64_t small[] = {4000};
    o.hints = small;
    o.n_hints = 1;
    o.hint_slots = 66;
    OSV_ASSERT_OK(osv_pool_create(&o, &hinted, &err), &err);
    osv_pool_get_stats(hinted, &b);
    for (uint32_t i = 0; i < a.n_classes; i++)
        assert_int_equal(slots_of(&b, a.cls[i].slot_size), a.cls[i].slots);
    osv_pool_destroy(hinted);
    /* hint_slots bounds the extra slots (8 here, where the budget would allow 14); what is left is
     * shared equally again. */
    o.hints = hints;
    o.n_hints = 3;
    o.hint_slots = 8;
    OSV_ASSERT_OK(osv_pool_create(&o, &hinted, &err), &err);
    osv_pool_get_stats(hinted, &b);
    assert_true(slots_of(&b, 1u << 20) >= 8 && slots_of(&b, 1u << 20) < 12);
    assert_true(slots_of(&b, 4096) > slots_of(&a, 4096) / 2);
    assert_true(b.total_bytes <= o.total_bytes);
    osv_pool_destroy(hinted);
    o.hint_slots = 0;
    /* A hint larger than every class changes nothing; explicit counts win over hints. */
    const uint64_t huge[] = {1ull << 40};
    const uint32_t counts[] = {2, 2};
    o.hints = huge;
    o.n_hints = 1;
    OSV_ASSERT_OK(osv_pool_create(&o, &hinted, &err), &err);
    osv_pool_get_stats(hinted, &b);
    assert_int_equal(slots_of(&b, 1u << 20), slots_of(&a, 1u << 20));
    osv_pool_destroy(hinted);
    o.hints = hints;
    o.n_hints = 3;
    o.counts = counts;
    o.n_counts = 2;
    OSV_ASSERT_OK(osv_pool_create(&o, &hinted, &err), &err);
    osv_pool_get_stats(hinted, &b);
    assert_int_equal(slots_of(&b, 4096), 2);
    assert_int_equal(slots_of(&b, 1u << 20), (24u << 20) / 8 / (1u << 20)); /* its equal share, no hint */
    osv_pool_destroy(hinted);
}

/* Under a cgroup v2 limit of 256 MiB with 200 MiB in use, the default budget is half of the 56 MiB
 * left; a reserve comes off the headroom first; a reserve beyond it leaves the 1 MiB floor. */
static void default_budget_keeps_the_reserve_out(void **state)
{
    char root[512], cg[600], self[600];
    (void)state;
    osv_test_tmpdir(root, sizeof root);
    osv_test_write_file(root, "self", "0::/srv\n");
    osv_test_write_file(root, "cg/srv/memory.max", "268435456\n");
    osv_test_write_file(root, "cg/srv/memory.current", "209715200\n");
    osv_test_write_file(root, "cg/srv/memory.stat", "anon 1\ninactive_file 0\n");
    snprintf(cg, sizeof cg, "%s/cg", root);
    snprintf(self, sizeof self, "%s/self", root);
    setenv("ORTSERVE_CGROUP_ROOT", cg, 1);
    setenv("ORTSERVE_PROC_CGROUP", self, 1);
    assert_int_equal(osv_pool_default_budget(), 28ull << 20);
    assert_int_equal(osv_pool_default_budget_reserving(20ull << 20), 18ull << 20);
    assert_int_equal(osv_pool_default_budget_reserving(100ull << 20), 1ull << 20);
    unsetenv("ORTSERVE_CGROUP_ROOT");
    unsetenv("ORTSERVE_PROC_CGROUP");
    osv_test_rmtree(root);
}

/* Storm: threads acquire, fill the slot with their id, verify nobody else wrote into it, release. */
#define STORM_THREADS 8
#define STORM_ROUNDS  20000

typedef struct storm {
    osv_pool_t *pool;
    int id;
    _Atomic uint64_t *busy;
    uint64_t corrupt;
} storm_t;

static void *storm_thread(void *arg)
{
    storm_t *s = arg;
    for (int r = 0; r < STORM_ROUNDS; r++) {
        osv_slot_t slot;
        uint64_t want = (uint64_t)(r % 3 == 0 ? 9000 : 100);
        if (osv_pool_acquire(s->pool, want, &slot) != 0) {
            atomic_fetch_add(s->busy, 1);
            continue;
        }
        int n = want < 256 ? (int)want : 256; /* only the bytes asked for (the ASan build poisons the rest) */
        memset(slot.base, s->id, (size_t)n);
        for (int k = 0; k < n; k++)
            if (slot.base[k] != (uint8_t)s->id)
                s->corrupt++;
        osv_pool_release(s->pool, &slot);
    }
    return NULL;
}

#ifdef OSV_ASAN
/* The ASan build poisons everything of a slot but the bytes asked for, the guard zone after every
 * slot, and released slots: any write past a range aborts instead of changing another request. */
static void asan_poisons_all_but_the_range(void **state)
{
    uint32_t counts[] = {2, 1};
    osv_pool_t *p = make_pool(4096, 16384, counts, 2);
    osv_slot_t a, b;
    (void)state;
    assert_int_equal(osv_pool_acquire(p, 100, &a), 0);
    assert_int_equal(a.cap, 100);
    assert_false(osv_is_poisoned(a.base));
    assert_false(osv_is_poisoned(a.base + 99));
    assert_true(osv_is_poisoned(a.base + 100));
    assert_true(osv_is_poisoned(a.base + 4095));
    assert_true(osv_is_poisoned(a.base + 4096)); /* the guard before the next slot */
    assert_int_equal(osv_pool_acquire(p, 4096, &b), 0);
    assert_false(osv_is_poisoned(b.base + 4095));
    assert_true(osv_is_poisoned(b.base + 4096));
    osv_pool_release(p, &b);
    osv_pool_release(p, &a);
    assert_int_equal(osv_pool_acquire(p, 64, &a), 0);
    assert_true(osv_is_poisoned(a.base + 64)); /* a smaller request later: the old range is closed */
    uint8_t *old = a.base;
    osv_pool_release(p, &a);
    assert_true(osv_is_poisoned(old)); /* released: a use after release is caught */
    osv_pool_destroy(p);
}
#endif

static void many_threads_storm(void **state)
{
    uint32_t counts[] = {4, 2};
    osv_pool_t *p = make_pool(4096, 16384, counts, 2);
    pthread_t th[STORM_THREADS];
    storm_t s[STORM_THREADS];
    _Atomic uint64_t busy = 0;
    osv_pool_stats_t st;
    (void)state;
    for (int i = 0; i < STORM_THREADS; i++) {
        s[i] = (storm_t){.pool = p, .id = i + 1, .busy = &busy};
        pthread_create(&th[i], NULL, storm_thread, &s[i]);
    }
    for (int i = 0; i < STORM_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(s[i].corrupt, 0);
    }
    osv_pool_get_stats(p, &st);
    assert_int_equal(st.cls[0].in_use, 0);
    assert_int_equal(st.cls[1].in_use, 0);
    assert_true(st.cls[0].high_water <= 4);
    assert_true(st.cls[1].high_water <= 2);
    assert_int_equal(st.cls[0].acquires + st.cls[1].acquires + busy, (uint64_t)STORM_THREADS * STORM_ROUNDS);
    assert_int_equal(osv_pool_bad_releases(p), 0);
    /* Every slot is back on its free list. */
    osv_slot_t all[6], extra;
    for (int i = 0; i < 6; i++)
        assert_int_equal(osv_pool_acquire(p, 1, &all[i]), 0);
    assert_int_equal(osv_pool_acquire(p, 1, &extra), OSV_EBUSY);
    for (int i = 0; i < 6; i++)
        osv_pool_release(p, &all[i]);
    osv_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classes_and_alignment),
        cmocka_unit_test(exhaustion_and_too_big),
        cmocka_unit_test(bounds_are_checked),
        cmocka_unit_test(double_release_is_detected),
        cmocka_unit_test(budget_layout_without_counts),
        cmocka_unit_test(budget_is_planned_whole),
        cmocka_unit_test(hints_favour_the_classes_requests_need),
        cmocka_unit_test(default_budget_keeps_the_reserve_out),
        cmocka_unit_test(many_threads_storm),
#ifdef OSV_ASAN
        cmocka_unit_test(asan_poisons_all_but_the_range),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
