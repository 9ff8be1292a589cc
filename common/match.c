/*
 * Purpose: the candidate-name rule of a pickup folder (match.h): the glob,
 * dotfiles, writers' temp names, and whether a glob can match anything.
 * Owns: nothing beyond the token arrays it frees before returning.
 * Invariants: match_name() is the one rule; match_check() accepts a glob only
 * after finding a name that match_name() takes (or when the search is too
 * big to finish, so that a valid glob is never refused), so a glob refused by
 * --check-config matches nothing at run time.
 */
#include "common/match.h"

#include <fnmatch.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

#define FLAGS (FNM_CASEFOLD | FNM_PERIOD)

static const char *const temp_suffixes[] = {".tmp", ".part"};

/* One element of a glob (fnmatch(3) syntax, backslash escapes on). */
struct gtok {
	char kind;	 /* 'c' one character, '*', '?', '[' a bracket expression */
	unsigned char c; /* 'c': the character */
	uint8_t set[32]; /* '[': the bytes it admits, ASCII case folded in */
};

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool in_set(const struct gtok *t, unsigned char c)
{
	return t->set[c >> 3] & (1u << (c & 7));
}

/* The end of the bracket expression opening at g[i] (one past its ']'), or 0
 * when it is not closed (then fnmatch takes '[' literally). */
static size_t bracket_end(const char *g, size_t i)
{
	size_t j = i + 1;
	if (g[j] == '!' || g[j] == '^')
		j++;
	if (g[j] == ']')
		j++;
	while (g[j] != '\0' && g[j] != ']') {
		if (g[j] == '[' && (g[j + 1] == ':' || g[j + 1] == '.' || g[j + 1] == '=')) {
			const char *e = strchr(g + j + 2, g[j + 1]);
			if (e != NULL && e[1] == ']') {
				j = (size_t)(e - g) + 2;
				continue;
			}
		}
		j += g[j] == '\\' && g[j + 1] != '\0' ? 2 : 1;
	}
	return g[j] == ']' ? j + 1 : 0;
}

/* Splits glob into tokens; *n_r is their number. Free the array. */
static struct gtok *tokenize(const char *g, size_t *n_r)
{
	struct gtok *t = xcalloc(strlen(g) + 1, sizeof(*t));
	size_t n = 0, i = 0, end;

	while (g[i] != '\0') {
		struct gtok *k = &t[n++];
		if (g[i] == '\\' && g[i + 1] != '\0') {
			k->kind = 'c';
			k->c = (unsigned char)g[i + 1];
			i += 2;
		} else if (g[i] == '*' || g[i] == '?') {
			k->kind = g[i++];
		} else if (g[i] == '[' && (end = bracket_end(g, i)) > 0) {
			char *b = xstrndup(g + i, end - i);
			k->kind = '[';
			for (unsigned c = 1; c < 256; c++) {
				char s[2] = {(char)c, '\0'};
				if (c != '/' && fnmatch(b, s, FNM_CASEFOLD) == 0)
					k->set[c >> 3] |= (uint8_t)(1u << (c & 7));
			}
			free(b);
			i = end;
		} else {
			k->kind = 'c';
			k->c = (unsigned char)g[i++];
		}
	}
	*n_r = n;
	return t;
}

/* True when every name the glob matches ends with suffix (lower case): its
 * last tokens each admit exactly one character, that of the suffix. */
static bool forces_suffix(const struct gtok *t, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++) {
		const struct gtok *g = &t[n - k + i];
		unsigned char want = (unsigned char)suffix[i];
		if (g->kind == 'c' && lower(g->c) == want)
			continue;
		if (g->kind != '[')
			return false;
		for (unsigned c = 1; c < 256; c++)
			if (in_set(g, (unsigned char)c) != (lower((unsigned char)c) == want))
				return false;
	}
	return true;
}

static bool ends_with_ci(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if (lower((unsigned char)name[n - k + i]) != (unsigned char)suffix[i])
			return false;
	return true;
}

bool match_name(const char *glob, const char *name)
{
	if (fnmatch(glob, name, FLAGS) != 0)
		return false;
	for (size_t i = 0; i < sizeof(temp_suffixes) / sizeof(temp_suffixes[0]); i++) {
		if (!ends_with_ci(name, temp_suffixes[i]))
			continue;
		size_t n;
		struct gtok *t = tokenize(glob, &n);
		bool named = forces_suffix(t, n, temp_suffixes[i]);
		free(t);
		if (!named)
			return false;
	}
	return true;
}

/* Search for a name the glob takes: '*' is "x" or "", '?' is "x", a bracket
 * one character it admits (one outside ".tmpar" when it has one: such a
 * character can neither start a dotfile nor complete a temp suffix; else
 * each of the few it admits). Bounded: gives up after a number of names. */
struct search {
	const char *glob;
	const struct gtok *t;
	size_t n;
	unsigned budget;
	char w[NAME_MAX + 1];
};

static bool is_suffix_char(unsigned char c)
{
	return c == '.' || strchr("tmpar", lower(c)) != NULL;
}

static bool search(struct search *s, size_t i, size_t len)
{
	if (len > NAME_MAX || s->budget == 0)
		return false;
	if (i == s->n) {
		s->budget--;
		s->w[len] = '\0';
		return len > 0 && strcmp(s->w, ".") != 0 && strcmp(s->w, "..") != 0 &&
		       match_name(s->glob, s->w);
	}
	const struct gtok *t = &s->t[i];
	if (len == NAME_MAX)
		return t->kind == '*' && search(s, i + 1, len);
	switch (t->kind) {
	case 'c':
		s->w[len] = (char)t->c;
		return search(s, i + 1, len + 1);
	case '?':
		s->w[len] = 'x';
		return search(s, i + 1, len + 1);
	case '*':
		s->w[len] = 'x';
		return search(s, i + 1, len + 1) || search(s, i + 1, len);
	default:
		for (unsigned c = 1; c < 256; c++) {
			if (in_set(t, (unsigned char)c) && !is_suffix_char((unsigned char)c)) {
				s->w[len] = (char)c;
				return search(s, i + 1, len + 1);
			}
		}
		for (unsigned c = 1; c < 256; c++) {
			if (!in_set(t, (unsigned char)c))
				continue;
			s->w[len] = (char)c;
			if (search(s, i + 1, len + 1))
				return true;
		}
		return false;
	}
}

const char *match_check(const char *glob)
{
	if (strchr(glob, '/') != NULL)
		return "a file name pattern without '/'";
	struct search s = {.glob = glob, .budget = 1024};
	s.t = tokenize(glob, &s.n);
	bool found = search(&s, 0, 0);
	free((void *)s.t);
	if (found || s.budget == 0)
		return NULL;
	return "a pattern that some file name can match (this one can never match any)";
}
