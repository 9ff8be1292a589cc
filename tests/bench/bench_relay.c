/*
 * Purpose: benchmark of the relay client alone: messages per second over
 * persistent sessions (smtpc + conn, the daemon's code) to an SMTP server,
 * normally Postfix's smtp-sink; tests/bench/bench_relay.sh compares it with
 * smtp-source's raw rate against the same sink in the same run.
 * Owns: its loop, the sessions, one content file (opened once per message,
 * as the daemon does).
 * Invariants: every message must be accepted (250) or the run fails; no spool,
 * no fsync: this measures the SMTP side only.
 *
 * usage: bench_relay HOST PORT SESSIONS MESSAGES [SIZE]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "daemon/smtp/smtpc.h"

struct bench {
	uv_loop_t *loop;
	char path[256];
	struct spool_env env;
	unsigned total, started, done, failed;
	unsigned open_sessions;
};

struct slot {
	struct bench *b;
	struct smtpc *s;
	struct smtpc_txn txn;
	bool busy;
};

static void next(struct slot *sl)
{
	struct bench *b = sl->b;
	if (b->started >= b->total) {
		smtpc_quit(sl->s);
		return;
	}
	int fd = open(b->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror("open");
		exit(1);
	}
	b->started++;
	smtpc_txn_init(&sl->txn, &b->env, fd);
	sl->busy = true;
	smtpc_send(sl->s, &sl->txn);
}

static void cb(struct smtpc *s, enum smtpc_event ev, void *arg)
{
	struct slot *sl = arg;
	struct bench *b = sl->b;
	switch (ev) {
	case SMTPC_EV_READY:
		if (!sl->busy)
			next(sl);
		break;
	case SMTPC_EV_NEXT:
		break; /* one transaction per slot at a time */
	case SMTPC_EV_DONE:
		sl->busy = false;
		b->done++;
		if (sl->txn.cls != SMTPC_OK || !sl->txn.rcpt[0].final ||
		    sl->txn.rcpt[0].cls != SMTPC_OK) {
			b->failed++;
			fprintf(stderr, "message failed: %s / %s\n",
				sl->txn.reply ? sl->txn.reply : "",
				sl->txn.rcpt[0].reply ? sl->txn.rcpt[0].reply : "");
		}
		smtpc_txn_deinit(&sl->txn);
		if (smtpc_idle(s))
			next(sl);
		break;
	case SMTPC_EV_CLOSED:
		if (smtpc_error_class(s) != SMTPC_OK)
			fprintf(stderr, "session closed: %s\n", smtpc_error(s));
		b->open_sessions--;
		break;
	}
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s HOST PORT SESSIONS MESSAGES [SIZE]\n", argv[0]);
		return 2;
	}
	unsigned sessions = (unsigned)atoi(argv[3]);
	struct bench b;
	memset(&b, 0, sizeof(b));
	b.total = (unsigned)atoi(argv[4]);
	size_t size = argc > 5 ? (size_t)atoi(argv[5]) : 2048;

	snprintf(b.path, sizeof(b.path), "/tmp/bench_relay.%d", (int)getpid());
	FILE *f = fopen(b.path, "w");
	if (f == NULL)
		return 1;
	size_t n = (size_t)fprintf(f, "From: bench@example.org\nTo: sink@example.net\n"
				      "Subject: bench\n\n");
	while (n < size) {
		size_t k = size - n > 76 ? 76 : size - n;
		for (size_t i = 0; i + 1 < k; i++)
			fputc('a' + (int)(i % 26), f);
		fputc('\n', f);
		n += k;
	}
	fclose(f);

	struct spool_rcpt rcpt = {.addr = (char *)"sink@example.net", .status = RCPT_PENDING};
	memcpy(b.env.id, "BENCH", 6);
	b.env.sender = (char *)"bench@example.org";
	b.env.rcpts = &rcpt;
	b.env.n_rcpts = 1;
	b.env.size = size;

	struct config_relay relay;
	memset(&relay, 0, sizeof(relay));
	relay.name = (char *)"bench";
	relay.host = argv[1];
	relay.port = (unsigned)atoi(argv[2]);
	relay.tls = TLS_MODE_NONE;
	relay.max_sessions = sessions;
	relay.max_messages_per_session = b.total;
	relay.idle_timeout_ms = 60000;
	relay.connect_timeout_ms = 30000;
	relay.greeting_timeout_ms = relay.command_timeout_ms = relay.data_timeout_ms = 60000;
	relay.data_block_timeout_ms = relay.data_done_timeout_ms = 60000;

	b.loop = uv_default_loop();
	struct slot *slots = calloc(sessions, sizeof(*slots));
	uint64_t t0 = uv_hrtime();
	for (unsigned i = 0; i < sessions; i++) {
		struct smtpc_params p = {.relay = &relay, .helo_name = "bench.example.org"};
		slots[i].b = &b;
		slots[i].s = smtpc_new(b.loop, &p, cb, &slots[i]);
		b.open_sessions++;
	}
	uv_run(b.loop, UV_RUN_DEFAULT);
	double secs = (double)(uv_hrtime() - t0) / 1e9;
	unlink(b.path);
	free(slots);
	uv_loop_close(b.loop);
	printf("bench_relay: %u messages of %zu bytes over %u sessions in %.3f s: %.0f msg/s "
	       "(%u failed)\n",
	       b.done, size, sessions, secs, (double)b.done / secs, b.failed);
	return b.failed || b.done != b.total ? 1 : 0;
}
