/* error.h — the thread-local error message behind lm_last_error (lamina.h). */
#ifndef LAMINA_ERROR_H
#define LAMINA_ERROR_H

/* records the message for lm_last_error() and returns code */
int lm_set_error(int code, const char *fmt, ...);

#endif /* LAMINA_ERROR_H */
