/*
 * Purpose: test shim (LD_PRELOAD) that makes the name "dual.test" resolve to
 * ::1 then 127.0.0.1, as "localhost" does on many hosts, so a test can check
 * that the relay client tries every address in order.
 * Owns: nothing; lists come from the real getaddrinfo and are chained
 * (glibc frees each node on its own, so freeaddrinfo handles the chain).
 * Invariants: any other name goes to the real getaddrinfo untouched.
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stddef.h>
#include <string.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	static gai_fn real;
	if (real == NULL)
		real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
	if (node == NULL || strcmp(node, "dual.test") != 0)
		return real(node, service, hints, res);
	struct addrinfo h, *a = NULL, *b = NULL;
	memset(&h, 0, sizeof(h));
	if (hints)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	h.ai_family = AF_INET6;
	int r = real("::1", service, &h, &a);
	if (r != 0)
		return r;
	h.ai_family = AF_INET;
	r = real("127.0.0.1", service, &h, &b);
	if (r != 0) {
		freeaddrinfo(a);
		return r;
	}
	struct addrinfo *t = a;
	while (t->ai_next)
		t = t->ai_next;
	t->ai_next = b;
	*res = a;
	return 0;
}
