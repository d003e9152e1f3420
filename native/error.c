/* error.c — lm_set_error and lm_last_error: one message per thread, so a
 * failing call on one thread never garbles another thread's message. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

#include "include/lamina.h"

static _Thread_local char t_error[256];

int lm_set_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_error, sizeof t_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *lm_last_error(void) { return t_error; }
