/*
 * Purpose: the in-memory handoff of a freshly queued message from ingest to
 * delivery (see handoff.h), and its byte budget.
 * Owns: the handoffs' memory; the budget's count (pd->handoff_bytes), which
 * pool threads and the loop change with atomic operations only.
 * Invariants: pd->handoff_bytes is the sum of the charges of the handoffs
 * alive and never exceeds HANDOFF_BUDGET; a handoff's envelope is the one
 * written to queue/ and its content the bytes of data/<id>, unchanged.
 */
#include "daemon/core/handoff.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

/* What malloc keeps per block besides the bytes asked for (a guess, so that
 * many small strings are not counted as nothing). */
#define BLOCK_COST 16

static size_t str_cost(const char *s)
{
	return s ? strlen(s) + 1 + BLOCK_COST : 0;
}

/* The heap bytes an envelope holds, near enough for a budget. */
static size_t env_cost(const struct spool_env *e)
{
	size_t n = str_cost(e->origin_pickup) + str_cost(e->origin_file) + str_cost(e->sender) +
		   str_cost(e->sender_params) + str_cost(e->reason);
	n += e->n_rcpts * sizeof(*e->rcpts) + BLOCK_COST;
	for (size_t i = 0; i < e->n_rcpts; i++)
		n += str_cost(e->rcpts[i].addr) + str_cost(e->rcpts[i].params) +
		     str_cost(e->rcpts[i].reply);
	n += e->n_edits * sizeof(*e->edits) + BLOCK_COST;
	for (size_t i = 0; i < e->n_edits; i++)
		n += str_cost(e->edits[i].insert);
	return n;
}

static bool reserve(struct pickupd *pd, size_t n)
{
	size_t cur = __atomic_load_n(&pd->handoff_bytes, __ATOMIC_RELAXED);
	do {
		if (n > HANDOFF_BUDGET || cur > HANDOFF_BUDGET - n)
			return false;
	} while (!__atomic_compare_exchange_n(&pd->handoff_bytes, &cur, cur + n, true,
					      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return true;
}

static void release(struct pickupd *pd, size_t n)
{
	__atomic_fetch_sub(&pd->handoff_bytes, n, __ATOMIC_RELAXED);
}

struct handoff *handoff_new(struct pickupd *pd, struct spool_env *env, char **content, size_t len)
{
	size_t charge = sizeof(struct handoff) + BLOCK_COST + env_cost(env);
	if (!reserve(pd, charge))
		return NULL;
	struct handoff *h = xcalloc(1, sizeof(*h));
	h->pd = pd;
	h->charge = charge;
	h->env = *env;
	memset(env, 0, sizeof(*env));
	if (content && *content && len > 0 && len <= HANDOFF_MAX_CONTENT &&
	    reserve(pd, len + BLOCK_COST)) {
		h->content = *content;
		h->content_len = len;
		h->charge += len + BLOCK_COST;
		*content = NULL;
	}
	return h;
}

void handoff_drop_content(struct handoff *h)
{
	if (h == NULL || h->content == NULL)
		return;
	free(h->content);
	h->content = NULL;
	h->charge -= h->content_len + BLOCK_COST;
	release(h->pd, h->content_len + BLOCK_COST);
	h->content_len = 0;
}

void handoff_free(struct handoff *h)
{
	if (h == NULL)
		return;
	free(h->content);
	spool_env_deinit(&h->env);
	release(h->pd, h->charge);
	free(h);
}

/* ---- offers ---------------------------------------------------------------------- */

static void offers_cb(uv_async_t *a)
{
	struct pickupd *pd = a->data;
	uv_mutex_lock(&pd->offer_lock);
	struct handoff_offer *list = pd->offers;
	pd->offers = NULL;
	for (struct handoff_offer *o = list; o; o = o->next)
		o->posted = false;
	uv_mutex_unlock(&pd->offer_lock);
	/* Each stays valid through this turn: its job ends on this thread. */
	for (struct handoff_offer *o = list; o; o = o->next)
		if (!pd->stopping && pd->offer_take)
			pd->offer_take(pd, o);
}

void handoff_offers_start(struct pickupd *pd)
{
	uv_mutex_init(&pd->offer_lock);
	uv_async_init(pd->loop, &pd->offer_async, offers_cb);
	pd->offer_async.data = pd;
	pd->offers_open = true;
}

void handoff_offers_close(struct pickupd *pd)
{
	if (!pd->offers_open || uv_is_closing((uv_handle_t *)&pd->offer_async))
		return;
	uv_close((uv_handle_t *)&pd->offer_async, NULL);
}

void handoff_offer_post(struct pickupd *pd, struct handoff_offer *o)
{
	__atomic_store_n(&o->state, OFFER_OPEN, __ATOMIC_RELAXED);
	uv_mutex_lock(&pd->offer_lock);
	o->posted = true;
	o->next = pd->offers;
	pd->offers = o;
	uv_mutex_unlock(&pd->offer_lock);
	uv_async_send(&pd->offer_async);
}

bool handoff_offer_close(struct handoff_offer *o)
{
	int open = OFFER_OPEN;
	return __atomic_compare_exchange_n(&o->state, &open, OFFER_CLOSED, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE) ||
	       open != OFFER_TAKEN;
}

bool handoff_offer_take(struct handoff_offer *o)
{
	int open = OFFER_OPEN;
	return __atomic_compare_exchange_n(&o->state, &open, OFFER_TAKEN, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}

void handoff_offer_done(struct pickupd *pd, struct handoff_offer *o, bool queued)
{
	if (o->posted) {
		uv_mutex_lock(&pd->offer_lock);
		for (struct handoff_offer **pp = &pd->offers; *pp; pp = &(*pp)->next)
			if (*pp == o) {
				*pp = o->next;
				break;
			}
		o->posted = false;
		uv_mutex_unlock(&pd->offer_lock);
	}
	if (o->taker && pd->offer_done)
		pd->offer_done(pd, o, queued);
	o->taker = NULL;
	handoff_free(o->h);
	o->h = NULL;
}
