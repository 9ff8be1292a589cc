/*
 * Purpose: fuzz config_parse with arbitrary bytes. Checks that it never crashes or leaks,
 * that it returns a config exactly when it reports no error, and that every error line
 * has the form "NAME:LINE: message".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

#define NAME "fuzz.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf errs = BUF_INIT;
	struct config *cfg = config_parse(NAME, (const char *)data, size, &errs);

	if ((cfg == NULL) != (errs.len > 0))
		abort();
	for (const char *line = errs.data; line != NULL && *line != '\0';) {
		const char *end = strchr(line, '\n');
		const char *p = line + strlen(NAME);
		if (end == NULL || strncmp(line, NAME ":", strlen(NAME) + 1) != 0)
			abort();
		if (*++p < '1' || *p > '9')
			abort();
		while (*p >= '0' && *p <= '9')
			p++;
		if (p[0] != ':' || p[1] != ' ' || p + 2 >= end)
			abort();
		line = end + 1;
	}
	if (cfg != NULL) {
		if (cfg->n_pickups == 0 || cfg->n_relays == 0 || cfg->spool.dir == NULL ||
		    cfg->control.socket == NULL || cfg->retry.n_schedule == 0)
			abort();
		for (size_t i = 0; i < cfg->n_relays; i++)
			if (config_find_relay(cfg, cfg->relays[i].name) != &cfg->relays[i] ||
			    cfg->relays[i].port == 0)
				abort();
	}
	config_free(cfg);
	buf_deinit(&errs);
	return 0;
}
