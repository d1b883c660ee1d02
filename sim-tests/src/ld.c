/* HINCRBYFLOAT's arithmetic as Redis does it (t_hash.c, util.c), for the
 * simulated Redis: the held value and the increment are parsed as C long
 * doubles (strtold, the whole text or nothing), added in long double, and
 * the sum written with "%.17Lf" with trailing zeros (and a trailing point)
 * cut. Rust has no long double, and on x86-64 it is the 80-bit x87 format,
 * so the sum Redis stores differs from an f64 sum: the simulation must
 * store what Redis stores, so it calls this, compiled by the same C
 * compiler and libc a redis-server of the machine is built against. */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redis's MAX_LONG_DOUBLE_CHARS. */
#define LD_CHARS_MAX (5 * 1024)

/* Redis's string2ld. */
static int parse_long_double(const char *text, size_t len, long double *out) {
    char buf[LD_CHARS_MAX];
    char *end;
    long double value;
    if (len == 0 || len >= sizeof(buf)) return 0;
    memcpy(buf, text, len);
    buf[len] = '\0';
    errno = 0;
    value = strtold(buf, &end);
    if (isspace((unsigned char)buf[0]) || end[0] != '\0' ||
        (errno == ERANGE &&
         (value == HUGE_VAL || value == -HUGE_VAL || fpclassify(value) == FP_ZERO)) ||
        errno == EINVAL || isnan(value))
        return 0;
    *out = value;
    return 1;
}

/* 0: the sum's text is in out (written bytes in *written); 1: the
 * increment is not a float; 2: it is NaN or infinite; 3: the held value is
 * not a float; 4: the sum would be NaN or infinite; 5: no room. */
int em_hincrbyfloat(const char *held, size_t held_len, int has_held, const char *incr,
                    size_t incr_len, char *out, size_t out_len, size_t *written) {
    long double value = 0, by;
    int len;
    if (!parse_long_double(incr, incr_len, &by)) return 1;
    if (isnan(by) || isinf(by)) return 2;
    if (has_held && !parse_long_double(held, held_len, &value)) return 3;
    value += by;
    if (isnan(value) || isinf(value)) return 4;
    len = snprintf(out, out_len, "%.17Lf", value);
    if (len < 0 || (size_t)len + 1 > out_len) return 5;
    if (strchr(out, '.') != NULL) {
        char *p = out + len - 1;
        while (*p == '0') {
            p--;
            len--;
        }
        if (*p == '.') len--;
    }
    if (len == 2 && out[0] == '-' && out[1] == '0') {
        out[0] = '0';
        len = 1;
    }
    out[len] = '\0';
    *written = (size_t)len;
    return 0;
}
