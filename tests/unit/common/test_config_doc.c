/*
 * Purpose: keeps the documentation of the configuration true to the key table of
 * common/config.c: the man page config/man/pickupd.conf.5.scd and the example
 * config/pickupd.conf must each name every key of the table in its section, with the
 * table's default (and, for keys with a fixed set of values, every value), and name no
 * key the table lacks. Adding a key, a section or a choice makes this test fail until
 * both documents have it.
 * Owns: nothing beyond each test.
 * Invariants: the table is read, not copied: config.c is compiled into this test so its
 * file-local keys[] and sections[] are visible (the linker then takes no config.o from
 * the library).
 *
 * Man page convention (see the comment at its top): under a "## [section ...]" heading,
 * each key is a line "*key* = _value_", followed by an indented paragraph holding
 * "Required." or "Default: *VALUE*." (VALUE verbatim from the table, scdoc-escaped),
 * "Default: empty" for an empty default, or "Default: " and prose where the default is
 * computed (the table has none).
 */
#include "common/config.c"

#include <setjmp.h>

#include <cmocka.h>

#define MAN_PAGE "../../../config/man/pickupd.conf.5.scd"
#define EXAMPLE	 "../../../config/pickupd.conf"

static char *doc_read(const char *path)
{
	FILE *f = fopen(path, "r");
	struct buf b = BUF_INIT;
	char chunk[4096];
	size_t n;

	if (f == NULL)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	return buf_steal(&b);
}

/* One documented key: its section word and name, and its paragraph with every run of
 * white space made one space. */
struct doc_entry {
	char sect[32];
	char name[64];
	struct buf para;
	bool seen;
};

struct doc {
	struct doc_entry *v;
	size_t n;
	char sects[SEC__COUNT * 2][32]; /* section words of the headings, as written */
	size_t n_sects;
};

static void doc_free(struct doc *d)
{
	for (size_t i = 0; i < d->n; i++)
		buf_deinit(&d->v[i].para);
	free(d->v);
}

/* Copies the word at s (up to a character of stop, or the end) into dst. */
static const char *doc_word(char *dst, size_t n, const char *s, const char *stop)
{
	size_t len = strcspn(s, stop);
	if (len >= n)
		len = n - 1;
	memcpy(dst, s, len);
	dst[len] = '\0';
	return s + len;
}

static void doc_parse_man(struct doc *d, const char *text)
{
	char sect[32] = "";
	struct doc_entry *cur = NULL;

	memset(d, 0, sizeof *d);
	for (const char *line = text; *line;) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);

		if (len > 0 && line[0] == '#') {
			cur = NULL;
			sect[0] = '\0';
			if (strncmp(line, "## [", 4) == 0) {
				doc_word(sect, sizeof sect, line + 4, " ]\n");
				if (d->n_sects < ARRAY_SIZE(d->sects))
					snprintf(d->sects[d->n_sects++], sizeof d->sects[0], "%s",
						 sect);
			}
		} else if (len > 0 && line[0] == '*' && sect[0]) {
			char name[64];
			const char *after = doc_word(name, sizeof name, line + 1, "*\n");
			if (strncmp(after, "* =", 3) == 0) {
				d->v = xrealloc(d->v, (d->n + 1) * sizeof *d->v);
				cur = &d->v[d->n++];
				memset(cur, 0, sizeof *cur);
				snprintf(cur->sect, sizeof cur->sect, "%s", sect);
				snprintf(cur->name, sizeof cur->name, "%s", name);
			}
		} else if (cur != NULL) {
			for (size_t i = 0; i < len; i++) {
				bool ws = line[i] == ' ' || line[i] == '\t';
				if (!ws)
					buf_append(&cur->para, &line[i], 1);
				else if (cur->para.len && cur->para.data[cur->para.len - 1] != ' ')
					buf_puts(&cur->para, " ");
			}
			if (cur->para.len && cur->para.data[cur->para.len - 1] != ' ')
				buf_puts(&cur->para, " ");
		}
		line += len + (eol != NULL);
	}
}

static bool doc_has(const struct doc_entry *e, const char *what)
{
	return e->para.data != NULL && strstr(e->para.data, what) != NULL;
}

/* "*.eml" as scdoc source writes it: "\*.eml". */
static void doc_escape(struct buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '*' || *s == '_' || *s == '\\')
			buf_puts(b, "\\");
		buf_append(b, s, 1);
	}
}

/* The problems of a man page source against the table, each printed; their count. */
static int check_man(const char *text)
{
	struct doc d;
	int problems = 0;

	doc_parse_man(&d, text);
	for (size_t s = 0; s < SEC__COUNT; s++) {
		bool found = false;
		for (size_t i = 0; i < d.n_sects; i++)
			found |= strcmp(d.sects[i], sections[s].name) == 0;
		if (!found) {
			print_error("man page: no \"## [%s]\" heading\n", sections[s].name);
			problems++;
		}
	}
	for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
		const struct key *key = &keys[k];
		const char *sect = sections[key->sect].name;
		struct doc_entry *e = NULL;
		for (size_t i = 0; i < d.n && e == NULL; i++)
			if (strcmp(d.v[i].sect, sect) == 0 && strcmp(d.v[i].name, key->name) == 0)
				e = &d.v[i];
		if (e == NULL) {
			print_error("man page: [%s] %s is not documented\n", sect, key->name);
			problems++;
			continue;
		}
		e->seen = true;
		struct buf want = BUF_INIT;
		if (key->flags & K_REQUIRED)
			buf_puts(&want, "Required.");
		else if (key->def == NULL)
			buf_puts(&want, "Default: ");
		else if (key->def[0] == '\0')
			buf_puts(&want, "Default: empty");
		else {
			buf_puts(&want, "Default: *");
			doc_escape(&want, key->def);
			buf_puts(&want, "*.");
		}
		if (!doc_has(e, want.data)) {
			print_error("man page: [%s] %s does not say \"%s\"\n", sect, key->name,
				    want.data);
			problems++;
		}
		buf_deinit(&want);
		for (const char *const *c = key->choices; c && *c; c++) {
			struct buf ch = BUF_INIT;
			buf_printf(&ch, "*%s*", *c);
			if (!doc_has(e, ch.data)) {
				print_error("man page: [%s] %s does not name its value %s\n", sect,
					    key->name, *c);
				problems++;
			}
			buf_deinit(&ch);
		}
	}
	for (size_t i = 0; i < d.n; i++)
		if (!d.v[i].seen) {
			print_error("man page: [%s] %s is not a key of common/config.c "
				    "(or is documented twice)\n",
				    d.v[i].sect, d.v[i].name);
			problems++;
		}
	doc_free(&d);
	return problems;
}

/* The problems of an example config against the table: every key is written in its
 * section, set (to its default, unless it has none) or commented out ("; key = ..."). */
static int check_example(const char *text)
{
	bool seen[ARRAY_SIZE(keys)] = {false};
	char sect[32] = "";
	int problems = 0, lineno = 0;

	for (const char *line = text; *line;) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		char *l = xstrndup(line, len);
		char *s = trim(l);
		bool commented = false;

		lineno++;
		line += len + (eol != NULL);
		if (*s == '[') {
			doc_word(sect, sizeof sect, s + 1, " ]");
			free(l);
			continue;
		}
		if (*s == ';' || *s == '#') {
			commented = true;
			s = trim(s + 1);
		}
		char name[64];
		char *eq = (char *)doc_word(name, sizeof name, s, " \t=");
		eq += strspn(eq, " \t");
		if (!sect[0] || *eq != '=' || !name[0] ||
		    strspn(name, "abcdefghijklmnopqrstuvwxyz_") != strlen(name)) {
			free(l); /* prose, not a key */
			continue;
		}
		/* The value ends where a comment starts: ';' or '#' after white space. */
		char *v = trim(eq + 1);
		for (char *p = v; *p; p++)
			if ((*p == ';' || *p == '#') && (p == v || is_ws(p[-1]))) {
				*p = '\0';
				break;
			}
		v = trim(v);
		size_t k;
		for (k = 0; k < ARRAY_SIZE(keys); k++)
			if (strcmp(sections[keys[k].sect].name, sect) == 0 &&
			    strcmp(keys[k].name, name) == 0)
				break;
		if (k == ARRAY_SIZE(keys)) {
			print_error("example:%d: [%s] %s is not a key of common/config.c\n", lineno,
				    sect, name);
			problems++;
		} else {
			seen[k] = true;
			const char *def = keys[k].def;
			if (!commented && def != NULL && !(keys[k].flags & K_REQUIRED) &&
			    strcmp(v, def) != 0) {
				print_error("example:%d: [%s] %s = %s, but its default is \"%s\"\n",
					    lineno, sect, name, v, def);
				problems++;
			}
		}
		free(l);
	}
	for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
		if (!seen[k]) {
			print_error("example: [%s] %s is missing\n", sections[keys[k].sect].name,
				    keys[k].name);
			problems++;
		}
	return problems;
}

static void doc_man_page_matches_table(void **state)
{
	char *text = doc_read(MAN_PAGE);
	assert_int_equal(check_man(text), 0);
	free(text);
}

static void doc_example_matches_table(void **state)
{
	char *text = doc_read(EXAMPLE);
	assert_int_equal(check_example(text), 0);
	free(text);
}

/* Replaces the first from in text by to; the result is the caller's. */
static char *doc_edit(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	struct buf b = BUF_INIT;

	assert_non_null(at);
	buf_append(&b, text, (size_t)(at - text));
	buf_puts(&b, to);
	buf_puts(&b, at + strlen(from));
	return buf_steal(&b);
}

/* Each kind of drift is caught: a key missing, a key unknown, a default changed. */
static void doc_checks_catch_drift(void **state)
{
	char *man = doc_read(MAN_PAGE), *example = doc_read(EXAMPLE);
	static const char *const man_edits[][2] = {
	    {"*max_header_size* =", "max_header_size ="}, /* undocumented */
	    {"*log_level* =", "*log_levels* ="},	  /* unknown, and one missing */
	    {"Default: *35M*.", "Default: *36M*."},	  /* wrong default */
	    {"*implicit*", "implicit"},			  /* a choice not named */
	    {"## [metrics]", "## METRICS"},		  /* section heading gone */
	    {"Default: *5d*.", "Default: *5d*.\n\n*x* = _y_\n\tDefault: *1*."}, /* extra */
	};
	static const char *const example_edits[][2] = {
	    {"max_recipients = 1000", "max_recipients = 999"},
	    {"max_recipients = 1000", "max_recipient = 1000"},
	    {"; temporary_reply", "; temporary_replies"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(man_edits); i++) {
		char *t = doc_edit(man, man_edits[i][0], man_edits[i][1]);
		print_message("expect complaints: %s -> %s\n", man_edits[i][0], man_edits[i][1]);
		assert_true(check_man(t) > 0);
		free(t);
	}
	for (size_t i = 0; i < ARRAY_SIZE(example_edits); i++) {
		char *t = doc_edit(example, example_edits[i][0], example_edits[i][1]);
		print_message("expect complaints: %s -> %s\n", example_edits[i][0],
			      example_edits[i][1]);
		assert_true(check_example(t) > 0);
		free(t);
	}
	free(man);
	free(example);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(doc_man_page_matches_table),
	    cmocka_unit_test(doc_example_matches_table),
	    cmocka_unit_test(doc_checks_catch_drift),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
