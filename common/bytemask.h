/*
 * bytemask: one bit per octet of a 32-octet block (bit k = octet k) for the
 * octets equal to a value, or >= 0x80. The body scanners (wire.c,
 * msgbody.c) test a whole block of a message with a few such masks instead
 * of looking at each octet. SSE2 where the compiler targets it (every
 * x86-64); elsewhere, or with BYTEMASK_PORTABLE defined (so that the tests
 * run this path too), a plain loop that gives the same masks.
 */
#ifndef PICKUPD_BYTEMASK_H
#define PICKUPD_BYTEMASK_H

#include <stdint.h>
#include <string.h>

#define BYTEMASK_BLOCK 32

#if defined(__SSE2__) && !defined(BYTEMASK_PORTABLE)
#include <emmintrin.h>

struct bytemask_block {
	__m128i lo, hi;
};

static inline void bytemask_load(struct bytemask_block *b, const char *p)
{
	b->lo = _mm_loadu_si128((const __m128i *)(const void *)p);
	b->hi = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
}

static inline uint32_t bytemask_eq(const struct bytemask_block *b, char c)
{
	__m128i v = _mm_set1_epi8(c);
	return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b->lo, v)) |
	       (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b->hi, v)) << 16;
}

static inline uint32_t bytemask_8bit(const struct bytemask_block *b)
{
	return (uint32_t)_mm_movemask_epi8(b->lo) | (uint32_t)_mm_movemask_epi8(b->hi) << 16;
}
#else
struct bytemask_block {
	unsigned char o[BYTEMASK_BLOCK];
};

static inline void bytemask_load(struct bytemask_block *b, const char *p)
{
	memcpy(b->o, p, BYTEMASK_BLOCK);
}

static inline uint32_t bytemask_eq(const struct bytemask_block *b, char c)
{
	uint32_t m = 0;
	for (int k = 0; k < BYTEMASK_BLOCK; k++)
		m |= (uint32_t)(b->o[k] == (unsigned char)c) << k;
	return m;
}

static inline uint32_t bytemask_8bit(const struct bytemask_block *b)
{
	uint32_t m = 0;
	for (int k = 0; k < BYTEMASK_BLOCK; k++)
		m |= (uint32_t)(b->o[k] >> 7) << k;
	return m;
}
#endif

/* Bits set in x (without a libgcc call where popcnt is not targeted). */
static inline unsigned bytemask_count(uint32_t x)
{
	x = x - ((x >> 1) & 0x55555555u);
	x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
	return (((x + (x >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24;
}

#endif
