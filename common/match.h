/*
 * match: which file names in a pickup folder are candidates ([pickup] match).
 * Pure: used by the pickup watcher for each name and by the config check, so
 * that --check-config, start-up and the watcher can never disagree.
 *
 * A name is a candidate when the glob matches it (fnmatch, case-insensitive,
 * FNM_PERIOD: a leading '.' is matched only by a literal '.' in the glob) and
 * it is not a writer's temp file: names ending in ".tmp" or ".part" (any
 * case) are left alone, so writers can write-then-rename, unless the glob
 * names that suffix itself (its last characters match only ".tmp", as in
 * "*.tmp" or "eml*.TMP": PHP's tempnam() writes such files in place).
 * Dotfiles likewise: only a glob that starts with a literal '.' takes them.
 */
#ifndef PICKUPD_MATCH_H
#define PICKUPD_MATCH_H

#include <stdbool.h>

bool match_name(const char *glob, const char *name);

/* NULL when glob can match some file name (one path component, at most
 * NAME_MAX octets, not "." or ".."); else a description of what is expected,
 * for a config error. */
const char *match_check(const char *glob);

#endif
