/* accesslog: see accesslog.h. */
#include "obs/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALOG_QUEUE 64              /* buffers waiting for the writer */
#define ALOG_FLUSH_BYTES (48 * 1024) /* a worker hands over at this size */

static struct {
    bool on, stop;
    int fd;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mg_buf_t q[ALOG_QUEUE];
    uint32_t qhead, qlen;
    _Atomic uint64_t dropped;
} A = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1 };

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void *writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&A.mu);
    for (;;) {
        while (A.qlen == 0 && !A.stop)
            pthread_cond_wait(&A.cv, &A.mu);
        if (A.qlen == 0 && A.stop)
            break;
        mg_buf_t b = A.q[A.qhead];
        A.qhead = (A.qhead + 1) % ALOG_QUEUE;
        A.qlen--;
        pthread_mutex_unlock(&A.mu);
        write_all(A.fd, b.p, b.len);
        mg_buf_free(&b);
        pthread_mutex_lock(&A.mu);
    }
    pthread_mutex_unlock(&A.mu);
    return NULL;
}

int mg_alog_start(const char *target)
{
    if (!target || strcmp(target, "off") == 0)
        return 0;
    if (strcmp(target, "stderr") == 0) {
        A.fd = STDERR_FILENO;
    } else {
        A.fd = open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (A.fd < 0)
            return -errno;
    }
    if (pthread_create(&A.thread, NULL, writer, NULL) != 0)
        return -EAGAIN;
    A.on = true;
    return 0;
}

bool mg_alog_enabled(void) { return A.on; }

void mg_alog_flush(mg_alog_worker_t *w)
{
    if (!A.on || w->buf.len == 0)
        return;
    pthread_mutex_lock(&A.mu);
    if (A.qlen < ALOG_QUEUE) {
        A.q[(A.qhead + A.qlen) % ALOG_QUEUE] = w->buf;
        A.qlen++;
        mg_buf_init(&w->buf);
        pthread_cond_signal(&A.cv);
    } else {
        atomic_fetch_add(&A.dropped, w->lines);
        w->buf.len = 0;
    }
    w->lines = 0;
    pthread_mutex_unlock(&A.mu);
}

void mg_alog_append(mg_alog_worker_t *w, const char *line, size_t n)
{
    if (!A.on)
        return;
    mg_buf_add(&w->buf, line, n);
    w->lines++;
    if (w->buf.len >= ALOG_FLUSH_BYTES)
        mg_alog_flush(w);
}

void mg_alog_stop(void)
{
    if (!A.on)
        return;
    pthread_mutex_lock(&A.mu);
    A.stop = true;
    pthread_cond_signal(&A.cv);
    pthread_mutex_unlock(&A.mu);
    pthread_join(A.thread, NULL);
    if (A.fd > STDERR_FILENO)
        close(A.fd);
    A.on = false;
}

uint64_t mg_alog_dropped(void) { return atomic_load(&A.dropped); }
