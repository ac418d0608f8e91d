// burst: send N HTTP/1.1 POSTs at once, each on its own connection, and print each one's status code in order.
//
//   burst PORT PATH BODIES [STEP]   (BODIES: one file, the N bodies each ended by a NUL byte; sent to
//                                    127.0.0.1. STEP: see below)
//
// scripts/serve_bench.sh's slow-upstream rounds use it to send 1,000 webhooks as one burst, for 40-60 ms of
// CPU a round on this machine where four curls of 250 transfers took 110-180 ms (GNU time), on the two cores
// the server needs. It maps the bodies' one file (1,000 files, one open and read each, took it 10-11 ms
// before its first connection) and builds every request head before it opens any connection, then opens the N
// connections at once from one epoll loop, writes each request once its connection is up, reads each answer
// to its Content-Length and closes. With STEP it opens STEP connections at a time instead, and between two
// steps writes the requests of those already up: the first request goes out about as soon as the burst
// starts, not after the N connects (about 20 ms for 1,000 here), and the requests reach the server spread over
// the connects. The status is "000" for a request that failed, had no whole answer within 30 s, or whose
// answer was cut short or is over 8 KB (curl would print the status of a cut answer).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct transfer {
    int fd;
    char head[480];  // the request's head; its body is sent from the bodies file's mapping
    struct iovec parts[2];
    size_t length, sent;
    char answer[8192];  // a webhook's answer is small: its head and a short JSON body
    size_t got;
    int status;  // 0 until answered or failed
};

// The whole file, mapped read-only (no copy): the requests' bodies are sent from it.
static char *map_file(const char *path, size_t *length) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat status;
    if (fd < 0 || fstat(fd, &status) < 0) { perror(path); exit(2); }
    *length = (size_t)status.st_size;
    if (*length == 0) { close(fd); return NULL; }
    char *bytes = mmap(NULL, *length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (bytes == MAP_FAILED) { perror(path); exit(2); }
    close(fd);
    return bytes;
}

static void finish(struct transfer *t, int epoll, int status, int *left) {
    epoll_ctl(epoll, EPOLL_CTL_DEL, t->fd, NULL);
    close(t->fd);
    t->fd = -1;
    t->status = status;
    (*left)--;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: burst PORT PATH BODIES [STEP]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    if (port <= 0) { fprintf(stderr, "burst: PORT must be positive\n"); return 2; }
    long step = 0;
    if (argc == 5) {
        char *end;
        errno = 0;
        step = strtol(argv[4], &end, 10);
        if (errno != 0 || *end != 0 || step <= 0) {
            fprintf(stderr, "burst: STEP must be a positive number\n");
            return 2;
        }
    }
    // A server that resets a connection mid-request makes that request's write fail, not the process stop.
    signal(SIGPIPE, SIG_IGN);
    size_t all_length;
    char *all = map_file(argv[3], &all_length);
    int n = 0;
    for (char *at = all; at && (at = memchr(at, 0, all_length - (size_t)(at - all))); at++) n++;
    if (n == 0 || all[all_length - 1] != 0) {
        fprintf(stderr, "burst: %s must hold at least one body, each ended by a NUL byte\n", argv[3]);
        return 2;
    }
    // calloc: the kernel's zeroed pages, touched only as far as each answer is written, not memset up front.
    struct transfer *transfers = calloc((size_t)n, sizeof *transfers);
    if (!transfers) { perror("burst"); return 2; }
    char *body = all;
    for (int i = 0; i < n; i++) {
        size_t body_length = strlen(body);
        struct transfer *t = &transfers[i];
        int head_length = snprintf(t->head, sizeof t->head,
            "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
            argv[2], port, body_length);
        if (head_length < 0 || (size_t)head_length >= sizeof t->head) {
            fprintf(stderr, "burst: PATH too long\n");
            return 2;
        }
        t->parts[0] = (struct iovec){.iov_base = t->head, .iov_len = (size_t)head_length};
        t->parts[1] = (struct iovec){.iov_base = body, .iov_len = body_length};
        t->length = (size_t)head_length + body_length;
        body += body_length + 1;
    }
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int left = n, opened = 0;
    if (step == 0 || step > n) step = n;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    struct epoll_event events[256];
    while (left > 0) {
        // The next STEP connections (all of them, without STEP), then a look at those already open: without
        // waiting while some are still to be opened.
        for (int end = step < n - opened ? opened + (int)step : n; opened < end; opened++) {
            struct transfer *t = &transfers[opened];
            t->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (t->fd < 0) { perror("socket"); t->status = -1; left--; continue; }
            if (connect(t->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
                close(t->fd);
                t->fd = -1;
                t->status = -1;
                left--;
                continue;
            }
            struct epoll_event event = {.events = EPOLLOUT | EPOLLIN, .data.ptr = t};
            epoll_ctl(epoll, EPOLL_CTL_ADD, t->fd, &event);
        }
        if (left == 0) break;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited >= 30000) break;
        int ready = epoll_wait(
            epoll, events, 256, opened < n ? 0 : (int)(30000 - waited < 1000 ? 30000 - waited : 1000));
        for (int e = 0; e < ready; e++) {
            struct transfer *t = events[e].data.ptr;
            if (t->fd < 0) continue;
            if (t->sent < t->length && (events[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                // What is left of the head and the body (a partial write goes on from where it stopped).
                struct iovec left_parts[2];
                int count = 0;
                size_t skip = t->sent;
                for (int p = 0; p < 2; p++) {
                    if (skip >= t->parts[p].iov_len) { skip -= t->parts[p].iov_len; continue; }
                    left_parts[count++] = (struct iovec){
                        .iov_base = (char *)t->parts[p].iov_base + skip, .iov_len = t->parts[p].iov_len - skip};
                    skip = 0;
                }
                ssize_t wrote = writev(t->fd, left_parts, count);
                if (wrote < 0 && errno != EAGAIN) { finish(t, epoll, -1, &left); continue; }
                if (wrote > 0) t->sent += (size_t)wrote;
                if (t->sent == t->length) {
                    struct epoll_event event = {.events = EPOLLIN, .data.ptr = t};
                    epoll_ctl(epoll, EPOLL_CTL_MOD, t->fd, &event);
                }
                continue;
            }
            if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t got = read(t->fd, t->answer + t->got, sizeof t->answer - 1 - t->got);
                if (got < 0 && errno == EAGAIN) continue;
                if (got <= 0) { finish(t, epoll, -1, &left); continue; }
                t->got += (size_t)got;
                t->answer[t->got] = 0;
                // Whole once the head has ended and Content-Length bytes follow it; then closed, as curl does.
                char *end = strstr(t->answer, "\r\n\r\n");
                if (!end) {
                    if (t->got == sizeof t->answer - 1) finish(t, epoll, -1, &left);
                    continue;
                }
                *end = 0;
                char *field = strcasestr(t->answer, "\r\ncontent-length:");
                size_t body = field ? strtoul(field + 17, NULL, 10) : 0;
                *end = '\r';
                int status = 0;
                if (t->got >= (size_t)(end + 4 - t->answer) + body) {
                    sscanf(t->answer, "HTTP/1.%*d %d", &status);
                    finish(t, epoll, status > 0 ? status : -1, &left);
                }
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (transfers[i].status > 0) printf("%d\n", transfers[i].status);
        else printf("000\n");
    }
    return 0;
}
