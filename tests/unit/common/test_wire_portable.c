/*
 * Purpose: the wire filter's tests (test_wire.c) on its portable block scan
 * (common/bytemask.h without SSE2), which other architectures run: wire.c
 * is compiled into this test with BYTEMASK_PORTABLE defined.
 */
#define BYTEMASK_PORTABLE
#include "common/wire.c"
#include "tests/unit/common/test_wire.c"
