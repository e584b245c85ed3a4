/* bench/loadgen.c: the compiled load generator of bench/run.py (--generator c), built by
 * `make bench/loadgen` (cc -O2 -Wall -Wextra -o bench/loadgen bench/loadgen.c; C11 with
 * libc, POSIX and Linux's epoll only). It does what bench/load.py's clients do for the
 * fanout and latency modes, far cheaper per delivery, so the generator is never the limit of
 * a figure: N WebSocket clients in one room, one thread, one epoll loop, every delivery
 * checked (load.py's docstring says how), latency from the kernel's receive time.
 *
 *   bench/loadgen --port P --path '/ws?room=bench&name=c{i}' --protocol chat|plain \
 *                 --n N --senders S --at-once A
 *
 * `{i}` in the path becomes the client's number. Once every client is connected (and, in
 * the chat, welcomed) it prints {"ready": true, "connected": N}; then it reads commands on
 * stdin, one a line, and answers each with one JSON line on stdout (`quit` excepted),
 * serving every socket while it waits for the next:
 *
 *   step RATE SECONDS SENDERS  send RATE messages/s in all, round-robin from the first
 *                              SENDERS clients, for SECONDS; wait (5 s at most) until every
 *                              client has every message of the step; print the step's row
 *                              (the keys of bench/run.py's step row, but the server's; and
 *                              gaps, elapsed_s, latency_samples, reads, waits)
 *   quiet STILL LIMIT          serve until no frame came for STILL s and every client is
 *                              welcomed (LIMIT s at most): {"quiet": true|false}
 *   mark                       remember each client's count of deliveries: {"marked": N}
 *   say SENDER                 client SENDER sends its next message: {"said": SEQ}
 *   delivered LIMIT            serve until every client has a delivery since the mark
 *                              (LIMIT s at most): {"delivered": least since the mark over
 *                              the clients, "behind": clients with none}
 *   quit                       close every socket and exit
 *
 * Errors (a client that cannot connect, a handshake refused, a frame no server sends, a bad
 * command) end it with a message on stderr and exit status 1; every wait has a limit.
 * No permessage-deflate: the runner keeps load.py for the +deflate kinds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SCRATCH_SIZE (256 * 1024) /* one recvmsg's worth, as load.py's RECV_SIZE */
#define LATENCY_SAMPLE 4          /* one frame in this many per client is timed */
#define MAX_EVENTS 256            /* per epoll_wait: a step's sender is due again soon */
/* After a wait that found some sockets ready (not a full batch), pause this long before the
 * next: the server writes a round of frames to its clients one after the other, and waking
 * for each costs more than reading it. Arrival times are the kernel's, so the pause is not
 * counted as latency; only a client's second frame within it makes its first one's time the
 * later (erring high, as load.py's reads of several frames do). */
#define GATHER_US 250
#define MAX_HEAD 16384            /* the handshake's answer, at the most */
#define MAX_FRAME (256u << 20)    /* a server frame larger than this is an error */
#define STDIN_ID UINT32_MAX       /* the epoll data of stdin; a client's is its number */

static void die(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

/* A growable byte buffer. Whoever holds the struct owns `data`; it grows (doubling) and
 * never shrinks, so after the first frames no receive or send allocates. */
struct buf {
    unsigned char *data;
    size_t len, cap;
};

static void buf_append(struct buf *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        if (!(b->data = realloc(b->data, cap)))
            die("out of memory");
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

enum state { CONNECTING, HANDSHAKE, OPEN, CLOSED };

struct client {
    int fd;
    enum state state;
    bool open;     /* false once the socket is closed or the server sent a close frame */
    bool welcomed; /* chat: its first text frame (the welcome) came; plain: always */
    uint32_t events; /* what epoll watches for it now */
    /* in: bytes received and not parsed yet, the head of an unfinished frame (or of the
     * handshake's answer). Empty in the usual case, where whole frames are parsed straight
     * from the shared scratch buffer. Owned by the client. */
    struct buf in;
    /* out: bytes the socket did not take yet (the request, then frames), from out_pos;
     * both are 0 when nothing waits. Owned by the client. */
    struct buf out;
    size_t out_pos;
    uint64_t next_id;   /* chat: the next message id expected (0: take the first seen) */
    uint64_t *got;      /* plain: per sender, the next number expected (senders of them) */
    uint64_t delivered; /* messages received once (holes aside), ever */
    uint64_t dups, gaps; /* since the step began */
    uint64_t frames, received; /* frames and bytes, ever */
    uint64_t pings;            /* of those frames, the server's pings (not events: quiet goes on) */
    uint64_t base;      /* `delivered` at the step's start or at `mark` */
};

static struct {
    int port, n, senders, at_once;
    const char *path;
    bool chat; /* protocol chat (this server); else plain (bench/baseline_app.py) */
} opt = {.at_once = 200};

static struct client *clients;
/* Per sender: the number of its next message. Counted where it is sent (load.py takes client
 * 0's count of what came back), so a message lost on the way is a hole for its receivers,
 * never a number sent twice. */
static uint64_t *next_seq;
static int epfd;
static int in_flight;       /* clients connecting or in their handshake */
static int failed;          /* clients whose connection or handshake failed */
static bool stdin_ready;
static uint64_t reads, waits; /* recvmsg calls that got data, and epoll_waits: a step's costs */
static double last_frame;   /* monotonic time any client last got a frame */
static uint64_t rng;        /* xorshift64 state, for the masking keys */
static unsigned char scratch[SCRATCH_SIZE]; /* every recvmsg lands here; parsed before the next */
static struct {
    double *v;
    size_t len, cap;
} lat; /* the step's latencies in seconds: one timed frame in LATENCY_SAMPLE per client */

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

static uint32_t random32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static void watch(struct client *c, uint32_t events) {
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - clients)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->events = events;
}

static void client_close(struct client *c) {
    if (c->state == CLOSED)
        return;
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        in_flight--;
        failed++;
    }
    c->state = CLOSED;
    c->open = false;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->in.len = c->out.len = c->out_pos = 0;
}

/* Send what waits in `out`; watch for writability while some is left. */
static void flush(struct client *c) {
    while (c->out_pos < c->out.len) {
        ssize_t sent = send(c->fd, c->out.data + c->out_pos, c->out.len - c->out_pos, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            client_close(c);
            return;
        }
        c->out_pos += sent;
    }
    if (c->out_pos == c->out.len) {
        c->out.len = c->out_pos = 0;
        watch(c, EPOLLIN);
    } else {
        watch(c, EPOLLIN | EPOLLOUT);
    }
}

/* One masked frame (RFC 6455: a client's frames are masked, with a fresh key each), sent at
 * once when nothing waits before it, else queued behind what does. */
static void send_frame(struct client *c, int opcode, const unsigned char *payload, size_t len) {
    static unsigned char frame[14 + 65535];
    if (!c->open || c->state != OPEN)
        return;
    if (len > 65535)
        die("a frame of %zu bytes to send", len);
    size_t head = 2;
    frame[0] = 0x80 | opcode;
    if (len < 126) {
        frame[1] = 0x80 | len;
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = len >> 8;
        frame[3] = len & 0xff;
        head = 4;
    }
    uint32_t key = random32();
    unsigned char *mask = frame + head;
    memcpy(mask, &key, 4);
    for (size_t i = 0; i < len; i++)
        frame[head + 4 + i] = payload[i] ^ mask[i & 3];
    size_t size = head + 4 + len, done = 0;
    if (c->out.len == 0) {
        ssize_t sent = send(c->fd, frame, size, MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            client_close(c);
            return;
        }
        done = sent < 0 ? 0 : (size_t)sent;
        if (done == size)
            return;
    }
    buf_append(&c->out, frame + done, size - done);
    watch(c, EPOLLIN | EPOLLOUT);
}

/* Client `sender`'s next message: `b<sender>.<seq> <wall-clock time, 6 decimals>`, as the
 * chat's message command or as plain text. */
static uint64_t say(int sender) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long seconds = now.tv_sec;
    long micros = (now.tv_nsec + 500) / 1000;
    if (micros == 1000000) {
        seconds++;
        micros = 0;
    }
    uint64_t seq = next_seq[sender]++;
    char text[200];
    int len = snprintf(text, sizeof text, "%sb%d.%llu %lld.%06ld%s", opt.chat ? "{\"type\":\"message\",\"text\":\"" : "",
                       sender, (unsigned long long)seq, seconds, micros, opt.chat ? "\"}" : "");
    send_frame(&clients[sender], 0x1, (const unsigned char *)text, (size_t)len);
    return seq;
}

/* -- parsing: the regexes of load.py, by hand ------------------------------------------- */

/* \d+ at *at: its value, and *at moved past it; false (and *at unchanged) when no digit. */
static bool digits(const unsigned char **at, const unsigned char *end, uint64_t *value) {
    const unsigned char *p = *at;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    if (p == *at)
        return false;
    *at = p;
    *value = v;
    return true;
}

/* A send time, \d+\.\d+, kept as whole seconds and fraction (a double of the whole would
 * lose the microseconds' last digit). */
struct stamp {
    uint64_t seconds;
    double fraction;
};

static bool stamp(const unsigned char **at, const unsigned char *end, struct stamp *t) {
    const unsigned char *p = *at;
    if (!digits(&p, end, &t->seconds) || p >= end || *p != '.')
        return false;
    const unsigned char *first = ++p;
    uint64_t v = 0, scale = 1;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (scale < 1000000000000000000ull) {
            v = v * 10 + (*p - '0');
            scale *= 10;
        }
    }
    if (p == first)
        return false;
    t->fraction = (double)v / (double)scale;
    *at = p;
    return true;
}

static void sample(struct timespec arrived, struct stamp sent) {
    if (lat.len == lat.cap) {
        lat.cap = lat.cap ? 2 * lat.cap : 65536;
        if (!(lat.v = realloc(lat.v, lat.cap * sizeof *lat.v)))
            die("out of memory");
    }
    lat.v[lat.len++] = ((double)arrived.tv_sec - (double)sent.seconds) + (arrived.tv_nsec * 1e-9 - sent.fraction);
}

/* MESSAGE_ID, "id":"(\d+)": the next match from *at on (*at moved past it), as findall.
 * Found by its 'd', which an event has two or three of in some 150 bytes: memchr's speed. */
static bool next_message_id(const unsigned char **at, const unsigned char *end, uint64_t *id) {
    if (end - *at < 7)
        return false;
    for (const unsigned char *d = *at + 2; d < end - 4 && (d = memchr(d, 'd', end - 4 - d)); d++) {
        const unsigned char *q = d + 4;
        if (d[-2] == '"' && d[-1] == 'i' && d[1] == '"' && d[2] == ':' && d[3] == '"' && digits(&q, end, id) &&
            q < end && *q == '"') {
            *at = q + 1;
            return true;
        }
    }
    return false;
}

/* SENT_AT, " (\d+\.\d+)\"": every send time in a chat frame, each a latency sample. */
static void sample_sent_times(const unsigned char *p, const unsigned char *end, struct timespec arrived) {
    while (p < end && (p = memchr(p, ' ', end - p))) {
        const unsigned char *q = p + 1;
        struct stamp sent;
        if (stamp(&q, end, &sent) && q < end && *q == '"') {
            sample(arrived, sent);
            p = q + 1;
        } else {
            p++;
        }
    }
}

/* A chat text frame (load.py's _chat): the first is the welcome, whose ids set the next one
 * expected; in each later frame, every message id counts once, in order: one below the
 * next expected is a repeat (doubled), one above it leaves a hole (missing). */
static void on_chat(struct client *c, const unsigned char *p, size_t len, struct timespec arrived) {
    const unsigned char *end = p + len, *at = p;
    uint64_t id, last = 0, expected = c->next_id;
    bool any = false;
    if (!c->welcomed) {
        while (next_message_id(&at, end, &id)) {
            last = id;
            any = true;
        }
        c->welcomed = true;
        c->next_id = any ? last + 1 : 0;
        return;
    }
    while (next_message_id(&at, end, &id)) {
        any = true;
        if (expected == 0) /* no id seen yet: the first one starts the count */
            expected = id;
        if (id < expected) {
            c->dups++;
            continue;
        }
        c->gaps += id - expected;
        c->delivered++;
        expected = id + 1;
    }
    if (!any)
        return; /* join, leave, typing */
    c->next_id = expected;
    if (c->frames % LATENCY_SAMPLE == 0)
        sample_sent_times(p, end, arrived);
}

/* A plain text frame (load.py's _plain): every mark b(\d+)\.(\d+) (\d+\.\d+), per sender in
 * order of its numbers. */
static void on_plain(struct client *c, const unsigned char *p, size_t len, struct timespec arrived) {
    const unsigned char *end = p + len;
    while (p < end && (p = memchr(p, 'b', end - p))) {
        const unsigned char *q = p + 1;
        uint64_t sender, seq;
        struct stamp sent;
        if (!digits(&q, end, &sender) || q >= end || *q++ != '.' || !digits(&q, end, &seq) || q >= end ||
            *q++ != ' ' || !stamp(&q, end, &sent)) {
            p++;
            continue;
        }
        p = q;
        if (sender >= (uint64_t)opt.senders)
            die("a message from sender %llu, and --senders is %d", (unsigned long long)sender, opt.senders);
        uint64_t *expected = &c->got[sender];
        if (seq < *expected) {
            c->dups++;
            continue;
        }
        c->gaps += seq - *expected;
        *expected = seq + 1;
        c->delivered++;
        if (c->frames % LATENCY_SAMPLE == 0)
            sample(arrived, sent);
    }
}

/* The whole frames at the start of data[0..len): handled in order; returns the bytes they
 * take (the rest is an unfinished frame). */
static size_t parse_frames(struct client *c, const unsigned char *data, size_t len, struct timespec arrived) {
    size_t pos = 0;
    while (len - pos >= 2) {
        const unsigned char *h = data + pos;
        uint64_t size = h[1] & 0x7f;
        size_t head = 2;
        if (size == 126) {
            if (len - pos < 4)
                break;
            size = (uint64_t)h[2] << 8 | h[3];
            head = 4;
        } else if (size == 127) {
            if (len - pos < 10)
                break;
            size = 0;
            for (int i = 2; i < 10; i++)
                size = size << 8 | h[i];
            head = 10;
        }
        if (h[1] & 0x80)
            die("client %d: a masked frame from the server", (int)(c - clients));
        if (size > MAX_FRAME)
            die("client %d: a frame of %llu bytes from the server", (int)(c - clients), (unsigned long long)size);
        if (len - pos - head < size)
            break;
        const unsigned char *payload = h + head;
        pos += head + size;
        c->frames++;
        switch (h[0] & 0x0f) {
        case 0x1:
            (opt.chat ? on_chat : on_plain)(c, payload, size, arrived);
            break;
        case 0x9: /* ping: pong with the same payload */
            c->pings++;
            send_frame(c, 0xA, payload, size);
            break;
        case 0x8:
            c->open = false;
            break;
        }
    }
    return pos;
}

static void on_readable(struct client *c) {
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = scratch, .iov_len = sizeof scratch};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t size = recvmsg(c->fd, &msg, 0);
    if (size < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (size <= 0) {
        client_close(c);
        return;
    }
    c->received += size;
    reads++;
    /* the kernel's time for the data (SO_TIMESTAMPNS: when the read's last segment came in) */
    struct timespec arrived;
    bool stamped = false;
    for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m)) {
        if (m->cmsg_level == SOL_SOCKET && m->cmsg_type == SCM_TIMESTAMPNS) {
            memcpy(&arrived, CMSG_DATA(m), sizeof arrived);
            stamped = true;
        }
    }
    if (!stamped)
        clock_gettime(CLOCK_REALTIME, &arrived);
    uint64_t events = c->frames - c->pings;
    if (c->state == OPEN && c->in.len == 0) {
        /* the usual case: whole frames straight from scratch; an unfinished one's head is kept */
        size_t used = parse_frames(c, scratch, (size_t)size, arrived);
        if (c->state != CLOSED && used < (size_t)size)
            buf_append(&c->in, scratch + used, (size_t)size - used);
    } else {
        buf_append(&c->in, scratch, (size_t)size);
        if (c->state == HANDSHAKE) {
            unsigned char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
            if (!end) {
                if (c->in.len > MAX_HEAD)
                    client_close(c);
                return;
            }
            if (c->in.len < 12 || memcmp(c->in.data, "HTTP/1.1 101", 12) != 0) {
                client_close(c);
                return;
            }
            size_t head = end + 4 - c->in.data;
            memmove(c->in.data, c->in.data + head, c->in.len - head);
            c->in.len -= head;
            c->state = OPEN;
            in_flight--;
        }
        size_t used = parse_frames(c, c->in.data, c->in.len, arrived);
        if (c->state != CLOSED) {
            memmove(c->in.data, c->in.data + used, c->in.len - used);
            c->in.len -= used;
        }
    }
    if (c->frames - c->pings != events) /* a ping is no event: pings go on while all is quiet */
        last_frame = mono();
}

static void on_writable(struct client *c) {
    if (c->state == CONNECTING) {
        int error = 0;
        socklen_t size = sizeof error;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size) < 0 || error) {
            client_close(c);
            return;
        }
        c->state = HANDSHAKE;
    }
    flush(c);
}

/* One epoll_wait (timeout_ms at most) and its events. */
static void serve(int timeout_ms) {
    struct epoll_event events[MAX_EVENTS];
    int ready = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    waits++;
    if (ready < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait: %s", strerror(errno));
    }
    if (ready > 0 && ready < MAX_EVENTS) { /* let the next wait gather more (GATHER_US) */
        struct timespec pause = {0, GATHER_US * 1000L};
        nanosleep(&pause, NULL);
    }
    for (int i = 0; i < ready; i++) {
        if (events[i].data.u32 == STDIN_ID) {
            stdin_ready = true;
            continue;
        }
        struct client *c = &clients[events[i].data.u32];
        if (c->state != CLOSED && events[i].events & EPOLLOUT)
            on_writable(c);
        if (c->state != CLOSED && events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(c);
    }
}

/* Serve until `done()` (checked before each wait) or `limit` seconds pass; false then. */
static bool serve_until(bool (*done)(void), double limit) {
    double deadline = mono() + limit;
    while (!done()) {
        double left = deadline - mono();
        if (left <= 0)
            return false;
        serve(left < 0.05 ? (int)(left * 1000) + 1 : 50);
    }
    return true;
}

/* -- connecting ------------------------------------------------------------------------- */

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char digit[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        *out++ = digit[v >> 18];
        *out++ = digit[v >> 12 & 63];
        *out++ = i + 1 < len ? digit[v >> 6 & 63] : '=';
        *out++ = i + 2 < len ? digit[v & 63] : '=';
    }
    *out = 0;
}

/* Client i: a non-blocking socket, connecting; its upgrade request waits in `out`. */
static void client_start(int i) {
    struct client *c = &clients[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s (clients so far: %d)", strerror(errno), i);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(opt.port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS)
        die("connect to 127.0.0.1:%d: %s", opt.port, strerror(errno));
    unsigned char nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce)
        die("getrandom: %s", strerror(errno));
    char key[25], path[1024], request[1400];
    base64(nonce, sizeof nonce, key);
    const char *mark = strstr(opt.path, "{i}");
    if (mark)
        snprintf(path, sizeof path, "%.*s%d%s", (int)(mark - opt.path), opt.path, i, mark + 3);
    else
        snprintf(path, sizeof path, "%s", opt.path);
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                       path, opt.port, key);
    buf_append(&c->out, request, (size_t)len);
    c->state = CONNECTING;
    c->open = true;
    c->welcomed = !opt.chat; /* the baseline sends no welcome */
    c->got = opt.chat ? NULL : calloc(opt.senders, sizeof *c->got);
    c->events = EPOLLOUT;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    in_flight++;
}

static int scan; /* the done() checks below: clients before it are known to pass */

static bool all_welcomed(void) {
    while (scan < opt.n && (clients[scan].welcomed || !clients[scan].open))
        scan++;
    return scan == opt.n;
}

/* Every client connected, at most at_once handshakes in flight; then every welcome in. */
static void connect_all(void) {
    int started = 0, finished = 0;
    double progress = mono();
    while (started < opt.n || in_flight > 0) {
        while (started < opt.n && in_flight < opt.at_once)
            client_start(started++);
        serve(50);
        if (started - in_flight > finished) {
            finished = started - in_flight;
            progress = mono();
        } else if (mono() - progress > 120) {
            die("%d handshakes in flight and none finished in 120 s", in_flight);
        }
    }
    if (failed)
        die("%d of %d clients failed to connect (refused, or no 101 to their upgrade)", failed, opt.n);
    scan = 0;
    if (!serve_until(all_welcomed, 60)) {
        int missing = 0;
        for (int i = 0; i < opt.n; i++)
            missing += !clients[i].welcomed;
        die("%d of %d clients were not welcomed in 60 s", missing, opt.n);
    }
}

/* -- the commands ----------------------------------------------------------------------- */

static uint64_t step_total; /* a step's messages: what every client must receive */
static double still;        /* quiet: how long no frame must have come */

static bool all_delivered(void) {
    while (scan < opt.n && clients[scan].delivered - clients[scan].base >= step_total)
        scan++;
    return scan == opt.n;
}

static bool all_quiet(void) {
    return mono() - last_frame >= still && all_welcomed();
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* load.py's percentile: nearest rank, Python's round() (halves to even); NaN when empty. */
static double percentile(double p) {
    if (!lat.len)
        return NAN;
    double at = p / 100 * (double)(lat.len - 1);
    size_t index = (size_t)at;
    double rest = at - (double)index;
    if (rest > 0.5 || (rest == 0.5 && index % 2))
        index++;
    return lat.v[index < lat.len ? index : lat.len - 1];
}

static void put_ms(const char *key, double seconds) {
    if (isnan(seconds))
        printf(", \"%s\": NaN", key);
    else
        printf(", \"%s\": %.3f", key, seconds * 1e3);
}

/* What a step counts: messages sent (rate * seconds of them, whole), deliveries since its
 * start over every client (expected: clients * sent), repeats and lost connections, the
 * latencies of the frames timed, frames (ever, as run.py's step), bytes received per
 * delivery, and this process's CPU over the step's wall time (sending and the wait after). */
static void step(double rate, double seconds, int senders) {
    if (senders < 1 || senders > opt.senders || rate <= 0 || seconds <= 0)
        die("step %g %g %d: needs a rate and seconds above 0 and 1 to %d senders", rate, seconds, senders, opt.senders);
    uint64_t received = 0, delivered = 0, doubled = 0, gaps = 0, frames = 0;
    for (int i = 0; i < opt.n; i++) {
        clients[i].dups = clients[i].gaps = 0;
        clients[i].base = clients[i].delivered;
        received -= clients[i].received; /* plus the counts at the end: the step's bytes */
    }
    lat.len = 0;
    reads = waits = 0;
    uint64_t total = (uint64_t)(rate * seconds), sent = 0;
    double cpu = cpu_seconds(), start = mono();
    for (;;) { /* an even stream: what is due by now, checked every 1 ms (and a pause) at least */
        uint64_t due = (uint64_t)((mono() - start) * rate) + 1;
        if (due > total)
            due = total;
        for (; sent < due; sent++)
            say((int)(sent % senders));
        if (sent == total || mono() - start > seconds + 10)
            break;
        serve(1);
    }
    step_total = sent;
    scan = 0;
    serve_until(all_delivered, 5.0);
    double elapsed = mono() - start;
    cpu = cpu_seconds() - cpu; /* the step's: not the sorting below, as in load.py */
    int lost = 0;
    for (int i = 0; i < opt.n; i++) {
        delivered += clients[i].delivered - clients[i].base;
        doubled += clients[i].dups;
        gaps += clients[i].gaps;
        frames += clients[i].frames;
        received += clients[i].received;
        lost += !clients[i].open;
    }
    qsort(lat.v, lat.len, sizeof *lat.v, by_value);
    uint64_t expected = (uint64_t)opt.n * total;
    printf("{\"rate\": %.17g, \"sent\": %llu, \"expected\": %llu, \"delivered\": %llu, \"missing\": %lld, "
           "\"doubled\": %llu, \"gaps\": %llu, \"connections_lost\": %d, \"deliveries_per_s\": %.3f",
           rate, (unsigned long long)total, (unsigned long long)expected, (unsigned long long)delivered,
           (long long)expected - (long long)delivered, (unsigned long long)doubled, (unsigned long long)gaps, lost,
           delivered / seconds);
    put_ms("p50_ms", percentile(50));
    put_ms("p99_ms", percentile(99));
    put_ms("max_ms", lat.len ? lat.v[lat.len - 1] : NAN);
    printf(", \"frames\": %llu, \"bytes_per_delivery\": %.3f, \"bench_cpu_pct\": %.3f, \"elapsed_s\": %.6f, "
           "\"latency_samples\": %zu, \"reads\": %llu, \"waits\": %llu}\n",
           (unsigned long long)frames, (double)received / (delivered ? delivered : 1), 100 * cpu / elapsed, elapsed,
           lat.len, (unsigned long long)reads, (unsigned long long)waits);
}

static bool all_reached(void) {
    while (scan < opt.n && clients[scan].delivered > clients[scan].base)
        scan++;
    return scan == opt.n;
}

static void delivered_since_mark(double limit) {
    scan = 0;
    serve_until(all_reached, limit);
    uint64_t least = UINT64_MAX;
    int behind = 0;
    for (int i = 0; i < opt.n; i++) {
        uint64_t since = clients[i].delivered - clients[i].base;
        least = since < least ? since : least;
        behind += !since;
    }
    printf("{\"delivered\": %llu, \"behind\": %d}\n", (unsigned long long)least, behind);
}

/* The next command line (its newline dropped), serving every socket while none is whole;
 * false at the end of stdin. stdin is watched only here, so a command's own waits do not
 * wake for the next one. */
static bool next_command(char *line, size_t size) {
    static char pending[4096];
    static size_t len;
    for (;;) {
        char *newline = memchr(pending, '\n', len);
        if (newline) {
            size_t n = newline - pending;
            if (n >= size)
                die("a command line too long");
            memcpy(line, pending, n);
            line[n] = 0;
            memmove(pending, newline + 1, len - n - 1);
            len -= n + 1;
            return true;
        }
        if (len == sizeof pending)
            die("a command line too long");
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_ID};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0)
            die("epoll_ctl on stdin: %s", strerror(errno));
        for (stdin_ready = false; !stdin_ready;)
            serve(1000);
        epoll_ctl(epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
        ssize_t got = read(STDIN_FILENO, pending + len, sizeof pending - len);
        if (got < 0 && errno != EINTR && errno != EAGAIN)
            die("reading stdin: %s", strerror(errno));
        if (got == 0)
            return false;
        len += got > 0 ? (size_t)got : 0;
    }
}

static void run_commands(void) {
    char line[512];
    while (next_command(line, sizeof line)) {
        double a, b;
        int k;
        if (sscanf(line, "step %lf %lf %d", &a, &b, &k) == 3) {
            step(a, b, k);
        } else if (sscanf(line, "quiet %lf %lf", &a, &b) == 2) {
            still = a;
            scan = 0;
            printf("{\"quiet\": %s}\n", serve_until(all_quiet, b) ? "true" : "false");
        } else if (strcmp(line, "mark") == 0) {
            for (int i = 0; i < opt.n; i++)
                clients[i].base = clients[i].delivered;
            printf("{\"marked\": %d}\n", opt.n);
        } else if (sscanf(line, "say %d", &k) == 1) {
            if (k < 0 || k >= opt.senders)
                die("say %d: senders are 0 to %d", k, opt.senders - 1);
            printf("{\"said\": %llu}\n", (unsigned long long)say(k));
        } else if (sscanf(line, "delivered %lf", &a) == 1) {
            delivered_since_mark(a);
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            die("unknown command: %s", line);
        }
        fflush(stdout);
    }
    for (int i = 0; i < opt.n; i++)
        client_close(&clients[i]);
}

static int number(const char *name, const char *value, int least) {
    char *end;
    long v = strtol(value, &end, 10);
    if (*end || v < least || v > 1000000)
        die("%s: a number from %d wanted, not %s", name, least, value);
    return (int)v;
}

int main(int argc, char **argv) {
    const char *protocol = NULL;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc)
            die("%s: a value wanted", argv[i]);
        const char *name = argv[i], *value = argv[i + 1];
        if (!strcmp(name, "--port"))
            opt.port = number(name, value, 1);
        else if (!strcmp(name, "--path"))
            opt.path = value;
        else if (!strcmp(name, "--protocol"))
            protocol = value;
        else if (!strcmp(name, "--n"))
            opt.n = number(name, value, 1);
        else if (!strcmp(name, "--senders"))
            opt.senders = number(name, value, 1);
        else if (!strcmp(name, "--at-once"))
            opt.at_once = number(name, value, 1);
        else
            die("unknown option %s", name);
    }
    if (!opt.port || !opt.path || !protocol || !opt.n || !opt.senders)
        die("usage: loadgen --port P --path PATH --protocol chat|plain --n N --senders S [--at-once A]");
    if (strcmp(protocol, "chat") && strcmp(protocol, "plain"))
        die("--protocol: chat or plain, not %s", protocol);
    opt.chat = !strcmp(protocol, "chat");
    if (opt.senders > opt.n)
        die("--senders %d: more than the %d clients", opt.senders, opt.n);
    signal(SIGPIPE, SIG_IGN);

    struct rlimit files; /* a socket per client: past the usual soft limit of 1,024 */
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    if (getrandom(&rng, sizeof rng, 0) != sizeof rng || !rng)
        rng = 0x9E3779B97F4A7C15ull;
    if (!(clients = calloc(opt.n, sizeof *clients)) || !(next_seq = calloc(opt.senders, sizeof *next_seq)))
        die("out of memory");
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    last_frame = mono();
    connect_all();
    printf("{\"ready\": true, \"connected\": %d}\n", opt.n);
    fflush(stdout);
    run_commands();
    return 0;
}
