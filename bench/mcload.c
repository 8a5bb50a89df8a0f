/* mcload: memcached text-protocol load generator for walnut's benchmark suite.
 *
 * One thread, epoll, N connections. Closed loop (P requests in flight per connection) or a
 * fixed arrival rate (-R, latency measured from the intended send time, so a stalled server
 * is not hidden by the generator waiting for it). Prints one JSON line on stdout.
 *
 * Build: gcc -O2 -o mcload mcload.c   (bench/run.py does this itself)
 *
 *   mcload -s 127.0.0.1:21211 -c 64 -d 5 -w 1 -r 0.9 -m 1 -P 1 -k 100000 -K 32 -V 100
 *   mcload -s ... -L                 populate keys 0..k-1 (sets), then exit
 *   mcload -s ... -R 20000           fixed 20k ops/s over all connections
 *   mcload -s ... -I 5 -c 10000      idle mode: open c connections, one get each, hold 5 s
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING 4096
#define INBUF (256 * 1024)
#define NB 1400

typedef struct {
    int fd, dead, wantout;
    char *in; size_t inlen;
    char *out; size_t outlen, outoff, outcap;
    uint64_t ts[RING]; uint16_t nk[RING]; /* nk: keys per get, 0 = set */
    unsigned head, tail;                 /* ring of outstanding requests */
    long vrem;                           /* bytes of value data (+CRLF) still to skip */
    uint64_t curhits, curbad;            /* VALUEs seen for the request at the head */
    uint64_t next_t, seq;                /* rate mode */
    uint64_t popnext;
} conn_t;

static int nconns = 64, depth = 1, mkeys = 1, keylen = 32, vallen = 100, populate = 0;
static double dur = 5, warm = 1, getratio = 0.9, rate = 0, idle_hold = 0, hardcap = 0;
static long keyspace = 100000;
static const char *prefix = "key:";
static char *value;
static uint64_t rng = 88172645463325252ULL;
static uint64_t hist[NB];
static uint64_t ops, keys, hits, getkeys, errors, badlen, conn_errors, sent, late;
static double lat_sum; static uint64_t lat_max;
static int measuring;
static uint64_t t_meas0, t_end;
static long popcursor;

static uint64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + t.tv_nsec;
}
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static int bucket(uint64_t v) {
    if (v < 64) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int sub = (int)((v >> (msb - 5)) & 31);
    int i = 64 + (msb - 6) * 32 + sub;
    return i < NB ? i : NB - 1;
}
static double bucket_val(int i) {
    if (i < 64) return i;
    int msb = (i - 64) / 32 + 6, sub = (i - 64) % 32;
    double lo = (double)((uint64_t)(32 + sub) << (msb - 5));
    return lo + (double)(1ULL << (msb - 5)) / 2;
}
static double pct(double p) {
    uint64_t n = 0; for (int i = 0; i < NB; i++) n += hist[i];
    if (!n) return 0;
    uint64_t want = (uint64_t)(p * n); if (want >= n) want = n - 1;
    uint64_t c = 0;
    for (int i = 0; i < NB; i++) { c += hist[i]; if (c > want) return bucket_val(i) / 1000.0; }
    return 0;
}

static void ensure_out(conn_t *c, size_t add) {
    if (c->outoff && c->outoff == c->outlen) c->outoff = c->outlen = 0;
    if (c->outlen + add > c->outcap) {
        if (c->outoff) { memmove(c->out, c->out + c->outoff, c->outlen - c->outoff); c->outlen -= c->outoff; c->outoff = 0; }
        while (c->outlen + add > c->outcap) c->outcap = c->outcap ? c->outcap * 2 : 16384;
        c->out = realloc(c->out, c->outcap);
    }
}
static int fmt_key(char *p, long k) { return sprintf(p, "%s%0*ld", prefix, keylen - (int)strlen(prefix), k); }

static void queue_req(conn_t *c, uint64_t ts, long popkey) {
    if (c->tail - c->head >= RING) return;
    int isget = popkey < 0 && (double)(rnd() % 1000000) / 1e6 < getratio;
    unsigned slot = c->tail % RING;
    if (isget) {
        ensure_out(c, 8 + (size_t)mkeys * (keylen + 24));
        char *p = c->out + c->outlen; p += sprintf(p, "get");
        for (int i = 0; i < mkeys; i++) { *p++ = ' '; p += fmt_key(p, (long)(rnd() % keyspace)); }
        p += sprintf(p, "\r\n"); c->outlen = p - c->out; c->nk[slot] = mkeys;
    } else {
        ensure_out(c, keylen + 64 + vallen);
        char *p = c->out + c->outlen; p += sprintf(p, "set ");
        p += fmt_key(p, popkey >= 0 ? popkey : (long)(rnd() % keyspace));
        p += sprintf(p, " 0 0 %d\r\n", vallen);
        memcpy(p, value, vallen); p += vallen; memcpy(p, "\r\n", 2); p += 2;
        c->outlen = p - c->out; c->nk[slot] = 0;
    }
    c->ts[slot] = ts; c->tail++; sent++;
}

static int flush_out(conn_t *c) {
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0) { if (errno == EAGAIN) return 0; return -1; }
        c->outoff += n;
    }
    return 0;
}

static void complete(conn_t *c, uint64_t t) {
    if (c->head == c->tail) { errors++; return; }
    unsigned slot = c->head % RING; c->head++;
    uint64_t h = c->curhits, b = c->curbad; c->curhits = c->curbad = 0;
    if (!measuring || t > t_end) return;
    if (c->ts[slot] < t_meas0) return; /* sent during warm-up */
    hits += h; badlen += b;
    uint64_t l = t - c->ts[slot];
    hist[bucket(l)]++; lat_sum += l; if (l > lat_max) lat_max = l;
    ops++; keys += c->nk[slot] ? c->nk[slot] : 1; getkeys += c->nk[slot];
}

/* returns -1 on protocol/connection error */
static int parse(conn_t *c, uint64_t t) {
    size_t pos = 0;
    for (;;) {
        if (c->vrem > 0) {
            size_t avail = c->inlen - pos, take = avail < (size_t)c->vrem ? avail : (size_t)c->vrem;
            pos += take; c->vrem -= take;
            if (c->vrem > 0) break;
            continue;
        }
        char *s = c->in + pos, *e = memmem(s, c->inlen - pos, "\r\n", 2);
        if (!e) break;
        size_t ll = e - s; pos += ll + 2;
        if (ll > 6 && !memcmp(s, "VALUE ", 6)) {
            char *sp = e; while (sp > s && sp[-1] != ' ') sp--;
            long b = strtol(sp, NULL, 10);
            c->curhits++; if (b != vallen) c->curbad++;
            c->vrem = b + 2;
        } else if (ll == 3 && !memcmp(s, "END", 3)) complete(c, t);
        else if (ll == 6 && !memcmp(s, "STORED", 6)) complete(c, t);
        else { if (measuring) errors++; complete(c, t); }
    }
    if (pos) { memmove(c->in, c->in + pos, c->inlen - pos); c->inlen -= pos; }
    return 0;
}

static int connect_to(struct sockaddr_in *sa) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)sa, sizeof *sa) < 0) { close(fd); return -1; }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void usage(void) {
    fprintf(stderr, "usage: mcload -s HOST:PORT [-c conns] [-d secs] [-w warmup] [-r getratio] [-m keys/get]\n"
                    "  [-P inflight/conn] [-k keyspace] [-K keylen] [-V vallen] [-x prefix] [-R rate]\n"
                    "  [-L (populate)] [-I idle-hold-secs] [-H hardcap-secs]\n");
    exit(2);
}

int main(int argc, char **argv) {
    char *server = NULL; int o;
    while ((o = getopt(argc, argv, "s:c:d:w:r:m:P:k:K:V:x:R:LI:H:")) != -1) switch (o) {
        case 's': server = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 'r': getratio = atof(optarg); break;
        case 'm': mkeys = atoi(optarg); break;
        case 'P': depth = atoi(optarg); break;
        case 'k': keyspace = atol(optarg); break;
        case 'K': keylen = atoi(optarg); break;
        case 'V': vallen = atoi(optarg); break;
        case 'x': prefix = optarg; break;
        case 'R': rate = atof(optarg); break;
        case 'L': populate = 1; break;
        case 'I': idle_hold = atof(optarg); break;
        case 'H': hardcap = atof(optarg); break;
        default: usage();
    }
    if (!server || nconns < 1 || depth < 1 || depth > RING / 2 || mkeys < 1) usage();
    char host[64]; const char *colon = strrchr(server, ':'); if (!colon) usage();
    snprintf(host, sizeof host, "%.*s", (int)(colon - server), server);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    value = malloc(vallen + 1); memset(value, 'x', vallen);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    rng ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL;

    conn_t *cs = calloc(nconns, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        cs[i].fd = connect_to(&sa);
        if (cs[i].fd < 0) { if (!conn_errors) fprintf(stderr, "mcload: connect #%d: %s\n", i, strerror(errno)); conn_errors++; cs[i].dead = 1; continue; }
        cs[i].in = malloc(INBUF);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    int alive = nconns - (int)conn_errors;
    if (!alive) { printf("{\"error\":\"no connection\",\"conn_errors\":%lu}\n", conn_errors); return 1; }

    uint64_t t0 = now_ns();
    if (idle_hold > 0) { measuring = 0; t_end = t0 + (uint64_t)(1e9 * 3600); if (hardcap <= 0) hardcap = 60 + idle_hold; }
    else if (populate) { measuring = 0; t_end = t0 + (uint64_t)(1e9 * (hardcap > 0 ? hardcap : 600)); depth = depth > 32 ? depth : 32; }
    else { t_meas0 = t0 + (uint64_t)(warm * 1e9); t_end = t_meas0 + (uint64_t)(dur * 1e9); }
    uint64_t t_hard = hardcap > 0 ? t0 + (uint64_t)(hardcap * 1e9) : t_end + 10ULL * 1000000000ULL;
    double interval = rate > 0 ? 1e9 * nconns / rate : 0;
    for (int i = 0; i < nconns; i++) if (!cs[i].dead) {
        conn_t *c = &cs[i];
        if (idle_hold > 0) { double g = getratio; getratio = 1; queue_req(c, t0, -1); getratio = g; }
        else if (populate) { while (c->tail - c->head < (unsigned)depth && popcursor < keyspace) queue_req(c, t0, popcursor++); }
        else if (rate > 0) { c->next_t = t0 + (uint64_t)(i * 1e9 / rate); }
        else for (int k = 0; k < depth; k++) queue_req(c, t0, -1);
        if (flush_out(c) < 0) { c->dead = 1; conn_errors++; }
    }
    int ready = 0; uint64_t t_ready = 0; uint64_t done_idle = 0;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (!populate && idle_hold <= 0) {
            if (!measuring && t >= t_meas0) measuring = 1;
            if (t >= t_end) break;
        }
        if (t >= t_hard) { fprintf(stderr, "mcload: hard cap reached\n"); break; }
        if (populate && popcursor >= keyspace) {
            int busy = 0; for (int i = 0; i < nconns; i++) if (!cs[i].dead && cs[i].head != cs[i].tail) busy = 1;
            if (!busy) break;
        }
        if (idle_hold > 0 && ready && t >= t_ready + (uint64_t)(idle_hold * 1e9)) break;
        int timeout = 100; struct timespec ts_wait = {0, 100000000};
        if (rate > 0) {
            for (int i = 0; i < nconns; i++) {
                conn_t *c = &cs[i]; if (c->dead) continue;
                int q = 0;
                while (c->next_t <= t && c->tail - c->head < 256) {
                    if (t - c->next_t > 1000000) late++;
                    queue_req(c, c->next_t, -1); c->seq++;
                    c->next_t = t0 + (uint64_t)(i * 1e9 / rate) + (uint64_t)(c->seq * interval); q = 1;
                }
                if (q && flush_out(c) < 0) { c->dead = 1; conn_errors++; }
            }
            uint64_t mn = UINT64_MAX;
            for (int i = 0; i < nconns; i++) if (!cs[i].dead && cs[i].next_t < mn) mn = cs[i].next_t;
            t = now_ns();
            uint64_t wait = mn <= t ? 0 : mn - t;
            if (wait > 100000000ULL) wait = 100000000ULL;
            ts_wait.tv_sec = wait / 1000000000ULL; ts_wait.tv_nsec = wait % 1000000000ULL;
        }
        int n = rate > 0 ? epoll_pwait2(ep, evs, 256, &ts_wait, NULL) : epoll_wait(ep, evs, 256, timeout);
        t = now_ns();
        for (int e = 0; e < n; e++) {
            conn_t *c = &cs[evs[e].data.u32]; if (c->dead) continue;
            if (evs[e].events & EPOLLOUT) {
                if (flush_out(c) < 0) { c->dead = 1; conn_errors++; continue; }
            }
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                int closed = 0;
                for (;;) {
                    ssize_t r = recv(c->fd, c->in + c->inlen, INBUF - c->inlen, 0);
                    if (r > 0) { c->inlen += r; parse(c, t); if (c->inlen == INBUF) { errors++; closed = 1; break; } continue; }
                    if (r == 0) closed = 1; else if (errno != EAGAIN) closed = 1;
                    break;
                }
                if (closed) { c->dead = 1; conn_errors++; close(c->fd); continue; }
                if (idle_hold > 0) {
                    if (c->head == c->tail && !c->seq) { c->seq = 1; if (++done_idle + conn_errors >= (uint64_t)nconns && !ready) { ready = 1; t_ready = t; fprintf(stderr, "mcload: %d idle connections ready\n", alive); fflush(stderr); } }
                } else if (populate) {
                    while (c->tail - c->head < (unsigned)depth && popcursor < keyspace) queue_req(c, t, popcursor++);
                } else if (rate <= 0) {
                    while (c->tail - c->head < (unsigned)depth) queue_req(c, t, -1);
                }
                if (flush_out(c) < 0) { c->dead = 1; conn_errors++; continue; }
            }
            int w = c->outoff < c->outlen;
            if (w != c->wantout) {
                struct epoll_event ev = {.events = EPOLLIN | (w ? EPOLLOUT : 0), .data.u32 = evs[e].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev); c->wantout = w;
            }
        }
    }
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    double wall = (now_ns() - t0) / 1e9;
    if (populate) { printf("{\"populated\":%ld,\"secs\":%.3f,\"conn_errors\":%lu}\n", popcursor, wall, conn_errors); return conn_errors ? 1 : 0; }
    if (idle_hold > 0) { printf("{\"idle_conns\":%lu,\"ready\":%d,\"conn_errors\":%lu}\n", done_idle, ready, conn_errors); return ready && !conn_errors ? 0 : 1; }
    printf("{\"ops\":%lu,\"ops_per_s\":%.1f,\"keys_per_s\":%.1f,\"hits\":%lu,\"get_keys\":%lu,\"hit_ratio\":%.4f,"
           "\"errors\":%lu,\"badlen\":%lu,\"conn_errors\":%lu,\"late_sends\":%lu,\"rate\":%.0f,"
           "\"lat_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},\"cpu_util\":%.3f}\n",
           ops, ops / dur, keys / dur, hits, getkeys, getkeys ? (double)hits / getkeys : 1.0, errors, badlen, conn_errors, late, rate,
           ops ? lat_sum / ops / 1000 : 0, pct(.5), pct(.9), pct(.99), pct(.999), lat_max / 1000.0, cpu / wall);
    return conn_errors ? 1 : 0;
}
