#!/bin/sh
# Runs one libFuzzer target for a bounded time from its seed corpus.
# usage: run.sh TARGET SEED_DIR WORK_DIR SECONDS
set -eu
target=$1 seeds=$2 work=$3 secs=$4
mkdir -p "$work" "$work.artifacts"
exec "$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$work.artifacts/" "$work" "$seeds"
