/* lookup: a host name resolved off the loop (getaddrinfo in a thread of its own), answered through sd-event. */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lookup.h"

/*
 * The thread and the loop share nothing but a socket pair: the thread owns its job (the
 * name and its end) and sends one datagram with the answer; the loop owns the other end.
 * Forgetting a lookup closes the loop's end, so the thread's send fails (EPIPE, no signal)
 * and it frees its job all the same. No locks, no shared memory, nothing to join.
 */
typedef struct Job {
        int fd;
        char host[];
} Job;

struct Lookup {
        sd_event_source *io;
        int fd;
        lookup_handler_t handler;
        void *userdata;
};

static void answer_fill(LookupAnswer *a, const struct addrinfo *ai) {
        for (; ai && a->n < LOOKUP_ADDRS_MAX; ai = ai->ai_next) {
                if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                        continue;
                if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a->addrs[a->n], LOOKUP_ADDR_MAX, NULL, 0, NI_NUMERICHOST) != 0)
                        continue;
                a->n++;
        }
        if (a->n == 0)
                a->error = EAI_NONAME;
}

static void *lookup_thread(void *p) {
        Job *j = p;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
        LookupAnswer a = { 0 };
        int r;

        r = getaddrinfo(j->host, NULL, &hints, &ai);
        if (r != 0) {
                a.error = r;
                a.sys_errno = r == EAI_SYSTEM ? errno : 0;
        } else {
                answer_fill(&a, ai);
                freeaddrinfo(ai);
        }
        (void) send(j->fd, &a, sizeof a, MSG_NOSIGNAL);
        close(j->fd);
        free(j);
        return NULL;
}

static int on_answer(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Lookup *l = userdata;
        LookupAnswer a = { 0 };
        ssize_t n;

        n = recv(fd, &a, sizeof a, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n != (ssize_t) sizeof a) {
                /* The thread went away without an answer (it cannot, short of a crash). */
                a = (LookupAnswer) { .error = EAI_SYSTEM, .sys_errno = n < 0 ? errno : EPIPE };
        }
        l->io = sd_event_source_disable_unref(l->io);
        l->handler(l, &a, l->userdata);
        return 0;
}

bool lookup_numeric(const char *host, char *ret) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
        struct addrinfo *ai = NULL;
        LookupAnswer a = { 0 };

        /* AI_NUMERICHOST: parsed in place, no NSS module is asked. */
        if (!host || getaddrinfo(host, NULL, &hints, &ai) != 0)
                return false;
        answer_fill(&a, ai);
        freeaddrinfo(ai);
        if (a.n == 0)
                return false;
        if (ret)
                memcpy(ret, a.addrs[0], LOOKUP_ADDR_MAX);
        return true;
}

int lookup_start(sd_event *event, const char *host, lookup_handler_t handler, void *userdata, Lookup **ret) {
        size_t len = strlen(host);
        sigset_t all, old;
        pthread_attr_t attr;
        pthread_t t;
        Lookup *l;
        Job *j;
        int fds[2], r;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0)
                return -errno;
        l = calloc(1, sizeof *l);
        j = malloc(sizeof *j + len + 1);
        if (!l || !j) {
                free(l);
                free(j);
                close(fds[0]);
                close(fds[1]);
                return -ENOMEM;
        }
        l->fd = fds[0];
        l->handler = handler;
        l->userdata = userdata;
        j->fd = fds[1];
        memcpy(j->host, host, len + 1);

        r = sd_event_add_io(event, &l->io, l->fd, EPOLLIN, on_answer, l);
        if (r < 0) {
                close(j->fd);
                free(j);
                lookup_free(l);
                return r;
        }

        /* Detached; every signal blocked, so that the loop's signalfd sees them all. */
        sigfillset(&all);
        r = pthread_attr_init(&attr);
        if (r == 0) {
                (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                (void) pthread_sigmask(SIG_BLOCK, &all, &old);
                r = pthread_create(&t, &attr, lookup_thread, j);
                (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
                (void) pthread_attr_destroy(&attr);
        }
        if (r != 0) {
                close(j->fd);
                free(j);
                lookup_free(l);
                return -r;
        }
        *ret = l;
        return 0;
}

Lookup *lookup_free(Lookup *l) {
        if (!l)
                return NULL;
        l->io = sd_event_source_disable_unref(l->io);
        close(l->fd);
        free(l);
        return NULL;
}

const char *lookup_strerror(const LookupAnswer *a) {
        if (a->error == EAI_SYSTEM)
                return strerror(a->sys_errno);
        return gai_strerror(a->error);
}
