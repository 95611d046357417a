/* fuzz.h — what every ortserve fuzz target shares: the libFuzzer entry points (the replay runner,
 * replay_main.c, calls the same two functions for every corpus file), invariant checks that abort
 * with a message (libFuzzer records an abort as a crash), and where the test models are. */
#ifndef OSV_FUZZ_H
#define OSV_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

/* libFuzzer's entry points; every target defines both. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints "file:line: invariant violated: <message>" to stderr and aborts. */
noreturn void fz_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define FZ_CHECK(cond, ...)                                                                                  \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            fz_fail(__FILE__, __LINE__, __VA_ARGS__);                                                        \
    } while (0)

/* Directory of the synthetic models tools/gen_models.py writes: $OSV_TEST_MODELS, else the build's
 * <source>/var/models. */
const char *fz_models_dir(void);

/* Splits data at its first '\n': *line = data[0..n), the rest after the '\n' (or nothing when there
 * is none). Returns the line length. */
size_t fz_split_line(const uint8_t *data, size_t size, const uint8_t **rest, size_t *rest_len);

#endif
