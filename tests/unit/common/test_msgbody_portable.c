/*
 * Purpose: the whole-content checks' tests (test_msgbody.c) on their
 * portable block scan (common/bytemask.h without SSE2), which other
 * architectures run: msgbody.c is compiled into this test with
 * BYTEMASK_PORTABLE defined.
 */
#define BYTEMASK_PORTABLE
#include "common/msgbody.c"
#include "tests/unit/common/test_msgbody.c"
