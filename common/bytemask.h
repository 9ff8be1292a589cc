/*
 * bytemask: one bit per octet of a 64-octet block (bit k = octet k) for the
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

#define BYTEMASK_BLOCK 64

#if defined(__SSE2__) && !defined(BYTEMASK_PORTABLE)
#include <emmintrin.h>

struct bytemask_block {
	__m128i v0, v1, v2, v3;
};

static inline void bytemask_load(struct bytemask_block *b, const char *p)
{
	b->v0 = _mm_loadu_si128((const __m128i *)(const void *)p);
	b->v1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
	b->v2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
	b->v3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
}

/* Written out: GCC does not unroll a loop over the four vectors at -O2. */
static inline uint64_t bytemask_join(__m128i a, __m128i b, __m128i c, __m128i d)
{
	return (uint64_t)(uint32_t)_mm_movemask_epi8(a) |
	       (uint64_t)(uint32_t)_mm_movemask_epi8(b) << 16 |
	       (uint64_t)(uint32_t)_mm_movemask_epi8(c) << 32 |
	       (uint64_t)(uint32_t)_mm_movemask_epi8(d) << 48;
}

static inline uint64_t bytemask_eq(const struct bytemask_block *b, char c)
{
	__m128i v = _mm_set1_epi8(c);
	return bytemask_join(_mm_cmpeq_epi8(b->v0, v), _mm_cmpeq_epi8(b->v1, v),
			     _mm_cmpeq_epi8(b->v2, v), _mm_cmpeq_epi8(b->v3, v));
}

static inline uint64_t bytemask_8bit(const struct bytemask_block *b)
{
	return bytemask_join(b->v0, b->v1, b->v2, b->v3);
}
#else
struct bytemask_block {
	unsigned char o[BYTEMASK_BLOCK];
};

static inline void bytemask_load(struct bytemask_block *b, const char *p)
{
	memcpy(b->o, p, BYTEMASK_BLOCK);
}

static inline uint64_t bytemask_eq(const struct bytemask_block *b, char c)
{
	uint64_t m = 0;
	for (int k = 0; k < BYTEMASK_BLOCK; k++)
		m |= (uint64_t)(b->o[k] == (unsigned char)c) << k;
	return m;
}

static inline uint64_t bytemask_8bit(const struct bytemask_block *b)
{
	uint64_t m = 0;
	for (int k = 0; k < BYTEMASK_BLOCK; k++)
		m |= (uint64_t)(b->o[k] >> 7) << k;
	return m;
}
#endif

/* Bits set in x (without a libgcc call where popcnt is not targeted). */
static inline unsigned bytemask_count(uint64_t x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	return (unsigned)((((x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL) * 0x0101010101010101ULL) >> 56);
}

/* The lowest and the highest set bit of x != 0. */
static inline unsigned bytemask_first(uint64_t x)
{
	return (unsigned)__builtin_ctzll(x);
}

static inline unsigned bytemask_last(uint64_t x)
{
	return 63u - (unsigned)__builtin_clzll(x);
}

#endif
