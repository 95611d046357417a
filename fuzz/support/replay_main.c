/* replay_main.c — the corpus replayer: a plain main() (no libFuzzer) that feeds every regular file
 * of the directories (or the files) named on the command line to LLVMFuzzerTestOneInput, in sorted
 * order. Built with the normal compiler into every test build, so `make test` replays each seed and
 * regression input under the release and the ASan+UBSan builds; a crash or failed invariant aborts
 * the test. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Reads a whole file into a malloc'ed buffer of exactly its size (so ASan sees reads past it). */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *buf;
    size_t n;
    if (!f || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!buf || n != (size_t)st.st_size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Runs every regular file of dir; returns the count, or -1. */
static int run_dir(const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, by_name), done = 0, rc = 0;
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s\n", dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        if (rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) != 0)
                rc = -1;
            done++;
        }
        free(list[i]);
    }
    free(list);
    return rc ? rc : done;
}

int main(int argc, char **argv)
{
    int total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int n = stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) == 0;
        if (n < 0)
            return 1;
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    printf("replayed %d inputs without a crash\n", total);
    return 0;
}
