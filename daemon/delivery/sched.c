/*
 * Purpose: the schedule of queued messages: a binary min-heap by due time
 * (then queue ID, so equal times go in arrival order) and one timer; beside
 * it, the handoffs of fresh messages (core/handoff.h) by queue ID.
 * Owns: the heap array, the timer handle, and each handoff until it is
 * taken; it knows nothing of who sends (the due callback does).
 * Invariants: heap[0] is the earliest entry; the timer is armed for it
 * whenever it lies in the future, so an idle queue costs no CPU; a handoff
 * is kept only while its ID is in the heap (sched_remove drops it with the
 * entry), so an operator's change to the message never meets a stale copy.
 */
#include "daemon/delivery/sched.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "daemon/core/handoff.h"
#include "daemon/core/pickupd.h"

/* Buckets of the handoff table: handoffs are few (their budget bounds them). */
#define HANDOFF_BUCKETS 256

struct sched {
	sched_due_cb due_cb;
	void *due_arg;
	struct sched_item *heap;
	size_t n, cap;
	uv_timer_t timer;
	bool stopped;
	struct handoff *handoffs[HANDOFF_BUCKETS];
	size_t n_handoffs;
};

static struct handoff **handoff_slot(struct sched *s, const char *id)
{
	size_t h = 5381;
	for (const char *p = id; *p; p++)
		h = h * 33 + (unsigned char)*p;
	struct handoff **pp = &s->handoffs[h % HANDOFF_BUCKETS];
	while (*pp && strcmp((*pp)->env.id, id) != 0)
		pp = &(*pp)->next;
	return pp;
}

static bool earlier(const struct sched_item *a, const struct sched_item *b)
{
	if (a->due_ms != b->due_ms)
		return a->due_ms < b->due_ms;
	return strcmp(a->id, b->id) < 0;
}

static void sift_up(struct sched *s, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!earlier(&s->heap[i], &s->heap[p]))
			break;
		struct sched_item t = s->heap[i];
		s->heap[i] = s->heap[p];
		s->heap[p] = t;
		i = p;
	}
}

static void sift_down(struct sched *s, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < s->n && earlier(&s->heap[l], &s->heap[m]))
			m = l;
		if (r < s->n && earlier(&s->heap[r], &s->heap[m]))
			m = r;
		if (m == i)
			return;
		struct sched_item t = s->heap[i];
		s->heap[i] = s->heap[m];
		s->heap[m] = t;
		i = m;
	}
}

static void arm(struct sched *s);

static void timer_cb(uv_timer_t *t)
{
	struct sched *s = t->data;
	/* due_ms 0 means "now": print it as such, not as a negative time. */
	long long in_ms = s->n ? (long long)(s->heap[0].due_ms - pickupd_now_ms()) : 0;
	if (s->n == 0)
		log_debug("schedule: empty");
	else if (in_ms > 0)
		log_debug("schedule: %zu message(s), the earliest due in %lld ms", s->n, in_ms);
	else
		log_debug("schedule: %zu message(s), the earliest due now", s->n);
	s->due_cb(s->due_arg);
	/* The loop's clock and the wall clock differ by a millisecond or so:
	 * a timer may fire just before the entry is due. Try again then; a due
	 * entry that no session can take waits for the pool, not the timer. */
	if (s->n && s->heap[0].due_ms > pickupd_now_ms())
		arm(s);
}

/* Arms the timer for the earliest future entry. */
static void arm(struct sched *s)
{
	if (s->stopped)
		return;
	uv_timer_stop(&s->timer);
	if (s->n == 0)
		return;
	int64_t wait = s->heap[0].due_ms - pickupd_now_ms();
	if (wait < 0)
		wait = 0;
	uv_timer_start(&s->timer, timer_cb, (uint64_t)wait, 0);
}

struct sched *sched_new(uv_loop_t *loop, sched_due_cb due_cb, void *arg)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	s->due_cb = due_cb;
	s->due_arg = arg;
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	return s;
}

void sched_stop(struct sched *s)
{
	if (s->stopped)
		return;
	s->stopped = true;
	uv_close((uv_handle_t *)&s->timer, NULL);
}

void sched_free(struct sched *s)
{
	for (size_t i = 0; i < HANDOFF_BUCKETS; i++) {
		while (s->handoffs[i]) {
			struct handoff *h = s->handoffs[i];
			s->handoffs[i] = h->next;
			handoff_free(h);
		}
	}
	free(s->heap);
	free(s);
}

void sched_add(struct sched *s, const char *id, enum spool_state state, int64_t due_ms)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->heap = xrealloc(s->heap, s->cap * sizeof(*s->heap));
	}
	struct sched_item *it = &s->heap[s->n];
	memcpy(it->id, id, SPOOL_ID_LEN);
	it->id[SPOOL_ID_LEN] = '\0';
	it->state = (uint8_t)state;
	it->due_ms = due_ms;
	sift_up(s, s->n++);
	/* A new earliest entry moves the timer (it may have moved up to the top). */
	if (s->heap[0].due_ms == due_ms && memcmp(s->heap[0].id, id, SPOOL_ID_LEN) == 0)
		arm(s);
}

void sched_add_handoff(struct sched *s, const char *id, enum spool_state state, int64_t due_ms,
		       struct handoff *h)
{
	sched_add(s, id, state, due_ms);
	if (h == NULL)
		return;
	struct handoff **pp = handoff_slot(s, id);
	if (*pp) {
		/* Never twice for one ID; the older copy goes. */
		struct handoff *old = *pp;
		*pp = old->next;
		handoff_free(old);
		s->n_handoffs--;
	}
	h->next = *pp;
	*pp = h;
	s->n_handoffs++;
}

struct handoff *sched_take_handoff(struct sched *s, const char *id)
{
	if (s->n_handoffs == 0)
		return NULL;
	struct handoff **pp = handoff_slot(s, id);
	struct handoff *h = *pp;
	if (h) {
		*pp = h->next;
		h->next = NULL;
		s->n_handoffs--;
	}
	return h;
}

size_t sched_handoffs(const struct sched *s)
{
	return s->n_handoffs;
}

void sched_push_back(struct sched *s, const struct sched_item *it)
{
	sched_add(s, it->id, (enum spool_state)it->state, it->due_ms);
}

bool sched_has_due(const struct sched *s)
{
	return s->n > 0 && s->heap[0].due_ms <= pickupd_now_ms();
}

bool sched_pop_due(struct sched *s, struct sched_item *it_r)
{
	if (!sched_has_due(s)) {
		arm(s);
		return false;
	}
	*it_r = s->heap[0];
	s->heap[0] = s->heap[--s->n];
	sift_down(s, 0);
	if (s->n && s->n < s->cap / 4 && s->cap > 1024) {
		s->cap /= 2;
		s->heap = xrealloc(s->heap, s->cap * sizeof(*s->heap));
	}
	arm(s); /* for the new earliest entry */
	return true;
}

size_t sched_size(const struct sched *s)
{
	return s->n;
}

/* Restores the heap order after arbitrary changes, then re-arms the timer. */
static void reheap(struct sched *s)
{
	for (size_t i = s->n / 2; i-- > 0;)
		sift_down(s, i);
	arm(s);
}

size_t sched_remove(struct sched *s, const char *id)
{
	size_t removed = 0;
	for (size_t i = 0; i < s->n;) {
		if (strcmp(s->heap[i].id, id) == 0) {
			s->heap[i] = s->heap[--s->n];
			removed++;
		} else {
			i++;
		}
	}
	if (removed)
		reheap(s);
	handoff_free(sched_take_handoff(s, id));
	return removed;
}

size_t sched_make_due(struct sched *s, enum spool_state state)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (s->heap[i].state == state && s->heap[i].due_ms != 0) {
			s->heap[i].due_ms = 0;
			n++;
		}
	}
	if (n)
		reheap(s);
	return n;
}
