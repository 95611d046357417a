/* file.c — reading a small file whole, bounded before it allocates; see file.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "file.h"
#include "ortserve/alloc.h"

int osv_read_file(const char *path, size_t max, char **out, size_t *len, osv_err_t *err)
{
    FILE *f = fopen(path, "rbe");
    struct stat st;
    char *buf;
    if (!f)
        return osv_err_set(err, errno == ENOENT ? OSV_ENOTFOUND : OSV_EIO, "cannot open %s: %s", path,
                           strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        fclose(f);
        return osv_err_set(err, OSV_ELIMIT, "%s is not a regular file of at most %zu bytes", path, max);
    }
    if (!(buf = osv_malloc((size_t)st.st_size + 1))) {
        fclose(f);
        return osv_err_set(err, OSV_ENOMEM, "out of memory reading %s", path);
    }
    *len = fread(buf, 1, (size_t)st.st_size, f);
    buf[*len] = '\0';
    fclose(f);
    *out = buf;
    return 0;
}
