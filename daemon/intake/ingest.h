/*
 * ingest: from "a file is in the pickup folder" to "a message is queued" (or
 * refused into badmail with a reason). Runs on a thread-pool thread: it opens,
 * checks, claims, classifies, parses and writes the envelope durably.
 * Owner: the pickup folder that submitted the job.
 */
#ifndef PICKUPD_INGEST_H
#define PICKUPD_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "daemon/core/handoff.h"
#include "daemon/core/pickupd.h"

enum ingest_result {
	INGEST_QUEUED,	  /* envelope in queue/ */
	INGEST_REFUSED,	  /* in badmail/ with a reason */
	INGEST_NOT_READY, /* a writer may still be at work: try again later */
	INGEST_GONE,	  /* the file is no longer there (another instance took it) */
	INGEST_SKIPPED,	  /* not ours to take (a directory...) */
	INGEST_ERROR,	  /* could not be taken now (permissions, disk): it stays */
	INGEST_NOSPACE,	  /* the spool's disk is full: it stays, ingestion pauses */
};

/* ingest_recover's outcome: the message queued again as id, or NULL. */
typedef void (*ingest_recovered_cb)(void *arg, const char *id);

struct ingest_job {
	struct job job;
	/* input */
	void *owner; /* the pickup folder (ingest_recover: cb's arg); not touched by the pool thread
		      */
	const struct config_pickup *pickup; /* the folder's own, held by the folder */
	int dir_fd;
	struct spool_dirsync *dir_sync; /* the folder's group commit, or NULL */
	char *name;
	const char *origin_file;	  /* recovery: the name it had in its folder; NULL = name */
	char *origin_buf;		  /* ingest_recover: owns origin_file */
	ingest_recovered_cb recovered_cb; /* ingest_recover's */
	/* hostname and submit are in pd->cfg at submission: job.cfg holds it */
	const char *hostname;
	const struct config_submit *submit; /* local envelope addresses (common/addrmap.h) */
	int64_t now_ms;
	/* Renamed in or closed by a writer (an inotify event): complete once no
	 * writer holds it, so settle_time does not apply. */
	bool finished;
	bool batch;    /* part of an ingest_batch: claims committed together */
	bool early;    /* a batch of one: data/'s fsync overlaps the content's */
	bool no_offer; /* never offered (see offers) */
	/* The batch's claim record, and this file's slot in it (NULL: a claim
	 * record of its own). */
	const struct spool_claim_batch *rec;
	size_t slot;
	/* output */
	bool claimed;		  /* renamed into data/ in a batch: durable once it commits */
	struct spool_claim claim; /* for undo when the batch's commit fails */
	enum ingest_result result;
	int err;		/* errno for INGEST_ERROR */
	char *reason;		/* for REFUSED, NOT_READY and ERROR */
	int64_t retry_after_ms; /* for NOT_READY */
	char id[SPOOL_ID_LEN + 1];
	char *sender;
	size_t n_rcpts;
	struct handoff
	    *handoff; /* INGEST_QUEUED: its envelope (and content) for delivery, or NULL */
	uint64_t size;
	unsigned uid; /* the pickup file's owner */
	/* A lone file's message offered to delivery before its claim is
	 * durable (handoff.h); the owner ends it with handoff_offer_done. */
	struct handoff_offer offer;
	/* Pool thread, from the claim until its content is durable (a batch
	 * fsyncs its claims' contents together): what is left to do, the file
	 * still open, the envelope built and the head read. */
	enum { INGEST_STAGE_OVER, INGEST_STAGE_QUEUE, INGEST_STAGE_REFUSE } stage;
	int fd;
	struct spool_env env;
	char *head;
	size_t got;
};

/* Files of one folder ingested by one pool job, so that their claims share
 * one fsync of data/ and one of the folder (spool_claim_commit). Each item
 * keeps its own result. Owner: the pickup folder. */
struct ingest_batch {
	struct job job;
	void *owner; /* the pickup folder; not touched by the pool thread */
	int dir_fd;
	struct spool_dirsync *dir_sync;
	struct ingest_job **items;
	size_t n;
	/* On the pool thread: one claim record for the batch's claims. */
	struct spool_claim_batch rec;
	const char **files;
};

/* Runs on a pool thread. */
void ingest_run(struct job *j);
void ingest_run_batch(struct job *j);
void ingest_job_free(struct ingest_job *ij);
/* Loop thread: a message whose envelope in queue/ is torn (a lost writeback
 * of spool_env_create_lazy) is ingested again from data/<id>, as recovery
 * does with content that has no envelope. cb(arg, new_id) follows, once,
 * new_id NULL when it was not queued (the log says why). */
void ingest_recover(struct pickupd *pd, const char *id, ingest_recovered_cb cb, void *arg);
/* The [pickup NAME] a claim record names; the first folder (with a warning)
 * when it is no longer configured or unknown (NULL). */
const struct config_pickup *ingest_origin_pickup(struct pickupd *pd, const char *name,
						 const char *id);

#endif
