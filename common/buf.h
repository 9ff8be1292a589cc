/*
 * buf: a growable byte buffer.
 * Owns: its data array. Invariants: data[len] == '\0' whenever data != NULL,
 * so the contents can be used as a C string when they hold no NUL.
 */
#ifndef PICKUPD_BUF_H
#define PICKUPD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

void buf_init(struct buf *b);
void buf_deinit(struct buf *b);
/* Makes room for n more bytes (plus the terminating NUL). Aborts on ENOMEM. */
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
void buf_clear(struct buf *b);
/* Returns the contents as a heap string and leaves b empty. */
char *buf_steal(struct buf *b);

/* Allocation that aborts on failure: running out of memory is not recoverable here. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
