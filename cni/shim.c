/*
 * sluice: the CNI binary the runtime executes, native build of cni/shim.py.
 *
 * Same behaviour and protocol as the Python shim (docs/cni.md): forward the
 * CNI_* environment (and PATH) plus stdin to the node's CNI server over its
 * unix socket as {"v": 1, "env": {...}, "stdin": base64}, shut down the write
 * side, relay the server's {"rc": int, "stdout": str}.  When the server is
 * unreachable: VERSION is answered here, ADD/CHECK/GC answer code 11, STATUS
 * 50, DEL is recorded in <stateDir>/pending-del/ and succeeds.
 *
 * why: exec of a Python interpreter costs 15-40 ms on a loaded node, more than
 * the whole ADD of the reference plugins; this binary starts in about 1 ms.
 * Built by `make cni-shim`; cni/install.py installs it only after it answered
 * VERSION, and falls back to the Python shim otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *const VERSIONS[] = {"0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_VERSIONS (sizeof(VERSIONS) / sizeof(VERSIONS[0]))
#define DEFAULT_SOCKET "/run/sluice/cni.sock"
#define DEFAULT_STATE_DIR "/var/lib/sluice"
#define CONNECT_TIMEOUT_MS 2000
#define REPLY_TIMEOUT_S 300
#define MAX_DEPTH 256

/* ---- growable buffer ---------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            fputs("sluice: out of memory\n", stderr);
            exit(1);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void putc_(struct buf *b, char c) { put(b, &c, 1); }

static void put_utf8(struct buf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    put(b, u, n);
}

/* ---- JSON output -------------------------------------------------------- */

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (!len || len > n) return 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* A JSON string.  Bytes that are not UTF-8 become \udcXX, as Python's
 * surrogateescape reads them from the environment. */
static void put_json(struct buf *b, const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    char esc[8];
    putc_(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            putc_(b, '\\'), putc_(b, (char)c), i++;
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c), puts_(b, esc), i++;
        } else if (c < 0x80) {
            putc_(b, (char)c), i++;
        } else {
            size_t len = utf8_len(s + i, n - i);
            if (len) {
                put(b, (const char *)s + i, len), i += len;
            } else {
                snprintf(esc, sizeof esc, "\\udc%02x", c), puts_(b, esc), i++;
            }
        }
    }
    putc_(b, '"');
}

static void put_base64(struct buf *b, const unsigned char *s, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char q[4] = {A[v >> 18], A[(v >> 12) & 63], i + 1 < n ? A[(v >> 6) & 63] : '=',
                     i + 2 < n ? A[v & 63] : '='};
        put(b, q, 4);
    }
}

/* ---- JSON input: a validating reader that keeps chosen top-level members -- */

struct field {
    const char *key;
    int is_string; /* 1: keep a string value, 0: keep an integer value */
    int found;
    struct buf str;
    long num;
};

struct reader {
    const char *s, *end;
};

static void ws(struct reader *r) {
    while (r->s < r->end && (*r->s == ' ' || *r->s == '\t' || *r->s == '\n' || *r->s == '\r'))
        r->s++;
}

static int hex4(struct reader *r, unsigned *out) {
    if (r->end - r->s < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *r->s++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* \uXXXX (and a following low surrogate) into UTF-8; a lone \udcXX is the raw
 * byte XX (Python's surrogateescape), other lone surrogates U+FFFD. */
static int unicode_escape(struct reader *r, struct buf *out) {
    unsigned cp, lo;
    if (hex4(r, &cp)) return -1;
    if (cp >= 0xD800 && cp < 0xDC00 && r->end - r->s >= 6 && r->s[0] == '\\' && r->s[1] == 'u') {
        struct reader save = *r;
        r->s += 2;
        if (!hex4(r, &lo) && lo >= 0xDC00 && lo < 0xE000) {
            if (out) put_utf8(out, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
            return 0;
        }
        *r = save;
    }
    if (!out) return 0;
    if (cp >= 0xDC80 && cp <= 0xDCFF) putc_(out, (char)(cp & 0xFF));
    else if (cp >= 0xD800 && cp < 0xE000) put_utf8(out, 0xFFFD);
    else put_utf8(out, cp);
    return 0;
}

/* A string at r->s (after ws); its decoded value goes to `out` when not NULL. */
static int string(struct reader *r, struct buf *out) {
    if (r->s >= r->end || *r->s != '"') return -1;
    r->s++;
    if (out) put(out, "", 0);
    while (r->s < r->end) {
        unsigned char c = (unsigned char)*r->s++;
        if (c == '"') return 0;
        if (c < 0x20) return -1;
        if (c != '\\') {
            if (out) putc_(out, (char)c);
            continue;
        }
        if (r->s >= r->end) return -1;
        c = (unsigned char)*r->s++;
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *hit = strchr(from, c);
        if (c == 'u') {
            if (unicode_escape(r, out)) return -1;
        } else if (c && hit) {
            if (out) putc_(out, to[hit - from]);
        } else {
            return -1;
        }
    }
    return -1;
}

static int value(struct reader *r, int depth, struct field *keep, size_t nkeep);

static int number(struct reader *r, long *out) {
    const char *start = r->s;
    while (r->s < r->end && *r->s && strchr("+-0123456789.eE", *r->s)) r->s++;
    if (r->s == start) return -1;
    if (out) {
        char tmp[32], *endp;
        size_t n = (size_t)(r->s - start);
        if (n >= sizeof tmp) return -1;
        memcpy(tmp, start, n), tmp[n] = '\0';
        *out = strtol(tmp, &endp, 10);
        if (*endp) return -1; /* not an integer */
    }
    return 0;
}

static int member(struct reader *r, int depth, struct field *keep, size_t nkeep) {
    struct buf key = {0};
    int err = string(r, &key);
    ws(r);
    if (!err && (r->s >= r->end || *r->s++ != ':')) err = -1;
    ws(r);
    struct field *f = NULL;
    for (size_t i = 0; !err && i < nkeep; i++)
        if (!strcmp(key.p, keep[i].key)) f = &keep[i];
    free(key.p);
    if (err) return -1;
    int is_str = r->s < r->end && *r->s == '"';
    int is_num = r->s < r->end && (*r->s == '-' || (*r->s >= '0' && *r->s <= '9'));
    if (f && f->is_string && is_str) {
        f->str.len = 0;
        f->found = string(r, &f->str) == 0;
        return f->found ? 0 : -1;
    }
    if (f && !f->is_string && is_num) {
        f->found = number(r, &f->num) == 0;
        return 0;
    }
    if (f) f->found = 0;
    return value(r, depth + 1, NULL, 0);
}

static int container(struct reader *r, int depth, struct field *keep, size_t nkeep) {
    char close = *r->s++ == '{' ? '}' : ']';
    ws(r);
    if (r->s < r->end && *r->s == close) return r->s++, 0;
    for (;;) {
        ws(r);
        int err = close == '}' ? member(r, depth, keep, nkeep) : value(r, depth + 1, NULL, 0);
        if (err) return -1;
        ws(r);
        if (r->s >= r->end) return -1;
        char c = *r->s++;
        if (c == close) return 0;
        if (c != ',') return -1;
    }
}

static int value(struct reader *r, int depth, struct field *keep, size_t nkeep) {
    ws(r);
    if (r->s >= r->end || depth > MAX_DEPTH) return -1;
    char c = *r->s;
    if (c == '{' || c == '[') return container(r, depth, c == '{' ? keep : NULL, nkeep);
    if (c == '"') return string(r, NULL);
    static const char *const lits[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(lits[i]);
        if ((size_t)(r->end - r->s) >= n && !memcmp(r->s, lits[i], n)) return r->s += n, 0;
    }
    return number(r, NULL);
}

/* Parse a whole JSON document; fill `keep` from its top-level object members. */
static int parse(const char *s, size_t n, struct field *keep, size_t nkeep) {
    struct reader r = {s, s + n};
    if (value(&r, 0, keep, nkeep)) return -1;
    ws(&r);
    return r.s == r.end ? 0 : -1;
}

/* ---- the CNI side ------------------------------------------------------- */

enum { F_VERSION, F_SOCKET, F_STATE };
static struct field conf[] = {
    {"cniVersion", 1, 0, {0}, 0}, {"serverSocket", 1, 0, {0}, 0}, {"stateDir", 1, 0, {0}, 0}};

static const char *conf_value(int i, const char *dflt) {
    return conf[i].found && conf[i].str.len ? conf[i].str.p : dflt;
}

static const char *version(void) {
    for (size_t i = 0; conf[F_VERSION].found && i < N_VERSIONS; i++)
        if (!strcmp(conf[F_VERSION].str.p, VERSIONS[i])) return VERSIONS[i];
    return VERSIONS[N_VERSIONS - 1];
}

static int cni_error(int code, const char *msg, const char *details) {
    struct buf out = {0};
    char num[16];
    puts_(&out, "{\"cniVersion\": "), put_json(&out, version());
    snprintf(num, sizeof num, "%d", code);
    puts_(&out, ", \"code\": "), puts_(&out, num), puts_(&out, ", \"msg\": "), put_json(&out, msg);
    if (details && *details) puts_(&out, ", \"details\": "), put_json(&out, details);
    putc_(&out, '}');
    fwrite(out.p, 1, out.len, stdout);
    return 1;
}

/* {"env": {CNI_* and PATH}, "stdin": base64}, preceded by `prefix`. */
static void put_request(struct buf *b, const char *prefix, const struct buf *in) {
    puts_(b, prefix), puts_(b, "\"env\": {");
    int first = 1;
    for (char **e = environ; *e; e++) {
        char *eq = strchr(*e, '=');
        if (!eq) continue;
        size_t klen = (size_t)(eq - *e);
        if (!(klen >= 4 && !strncmp(*e, "CNI_", 4)) && !(klen == 4 && !strncmp(*e, "PATH", 4)))
            continue;
        char *key = strndup(*e, klen);
        if (!key) exit(1);
        puts_(b, first ? "" : ", "), put_json(b, key), puts_(b, ": "), put_json(b, eq + 1);
        free(key), first = 0;
    }
    puts_(b, "}, \"stdin\": \"");
    put_base64(b, (const unsigned char *)in->p, in->len);
    puts_(b, "\"}");
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, struct buf *b) {
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return 0;
        put(b, chunk, (size_t)n);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Connect, retrying while the server's listen backlog is full (EAGAIN). */
static int connect_server(const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return errno = ENAMETOOLONG, -1;
    strcpy(sa.sun_path, path);
    double deadline = now() + CONNECT_TIMEOUT_MS / 1000.0;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
            fcntl(fd, F_SETFL, 0);
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            return fd;
        }
        int err = errno;
        close(fd);
        if (err != EAGAIN || now() > deadline) return errno = err, -1;
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    }
}

/* Send the request; on success fill *rc and `out` and return 0, else -1 with
 * `why` describing the failure. */
static int call_server(const char *path, const struct buf *in, int *rc, struct buf *out,
                       char *why, size_t whylen) {
    struct buf req = {0}, reply = {0};
    int fd = connect_server(path), ok = -1;
    if (fd >= 0) {
        put_request(&req, "{\"v\": 1, ", in);
        if (!write_all(fd, req.p, req.len) && !shutdown(fd, SHUT_WR) && !read_all(fd, &reply))
            ok = 0;
    }
    int err = errno;
    if (fd >= 0) close(fd);
    free(req.p);
    if (ok) {
        snprintf(why, whylen, "%s: [Errno %d] %s", path, err, strerror(err));
        free(reply.p);
        return -1;
    }
    struct field f[] = {{"rc", 0, 0, {0}, 0}, {"stdout", 1, 0, {0}, 0}};
    if (!reply.len || parse(reply.p, reply.len, f, 2) || !f[0].found) {
        snprintf(why, whylen, "%s: malformed reply from the CNI server", path);
        ok = -1;
    } else {
        *rc = (int)f[0].num;
        if (f[1].found) put(out, f[1].str.p, f[1].str.len);
    }
    free(reply.p), free(f[1].str.p);
    return ok;
}

static int mkdirs(const char *path, mode_t leaf_mode) {
    char *p = strdup(path);
    if (!p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) return free(p), -1;
        *s = '/';
    }
    int err = mkdir(p, leaf_mode) && errno != EEXIST ? -1 : 0;
    free(p);
    return err;
}

/* Record a DEL the server could not take, for replay when it starts. */
static int spool_delete(const struct buf *in) {
    struct buf dir = {0}, key = {0}, tmp = {0}, dst = {0}, data = {0};
    const char *cid = getenv("CNI_CONTAINERID"), *ifn = getenv("CNI_IFNAME");
    puts_(&dir, conf_value(F_STATE, DEFAULT_STATE_DIR)), puts_(&dir, "/pending-del");
    puts_(&key, cid ? cid : "none"), putc_(&key, '_'), puts_(&key, ifn ? ifn : "none");
    for (char *c = key.p; *c; c++)
        if (!(strchr("._-", *c) || (*c >= '0' && *c <= '9') || ((*c | 32) >= 'a' && (*c | 32) <= 'z')))
            *c = '_';
    puts_(&tmp, dir.p), puts_(&tmp, "/."), puts_(&tmp, key.p), puts_(&tmp, ".tmp");
    puts_(&dst, dir.p), putc_(&dst, '/'), puts_(&dst, key.p), puts_(&dst, ".json");
    put_request(&data, "{", in);
    int err = -1, fd = -1;
    if (!mkdirs(dir.p, 0700) &&
        (fd = open(tmp.p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) >= 0 &&
        !write_all(fd, data.p, data.len) && !close(fd) && !rename(tmp.p, dst.p))
        err = 0;
    int saved = errno;
    if (err && fd >= 0) close(fd), unlink(tmp.p);
    free(dir.p), free(key.p), free(tmp.p), free(dst.p), free(data.p);
    errno = saved;
    return err;
}

static int unreachable(const char *command, const struct buf *in, const char *why) {
    if (!strcmp(command, "DEL")) {
        if (spool_delete(in) == 0) return 0;
        return cni_error(5, "CNI server unreachable and DEL could not be recorded", strerror(errno));
    }
    if (!strcmp(command, "STATUS")) return cni_error(50, "sluice CNI server is not running", why);
    return cni_error(11, "sluice CNI server is not reachable, try again later", why);
}

int main(void) {
    const char *command = getenv("CNI_COMMAND");
    struct buf in = {0}, out = {0};
    char why[512];
    int rc = 0;
    command = command ? command : "";
    signal(SIGPIPE, SIG_IGN); /* why: a server closing early must be an error, not a kill */
    if (read_all(0, &in)) in.len = 0;
    int bad_json = in.len && parse(in.p, in.len, conf, 3);
    if (bad_json) {
        for (size_t i = 0; i < 3; i++) conf[i].found = 0;
        if (strcmp(command, "VERSION"))
            return cni_error(6, "network configuration is not valid JSON", "invalid JSON");
    }
    if (!strcmp(command, "VERSION")) {
        puts_(&out, "{\"cniVersion\": "), put_json(&out, version());
        puts_(&out, ", \"supportedVersions\": [");
        for (size_t i = 0; i < N_VERSIONS; i++)
            puts_(&out, i ? ", " : ""), put_json(&out, VERSIONS[i]);
        puts_(&out, "]}");
        fwrite(out.p, 1, out.len, stdout);
        return 0;
    }
    if (call_server(conf_value(F_SOCKET, DEFAULT_SOCKET), &in, &rc, &out, why, sizeof why))
        return unreachable(command, &in, why);
    fwrite(out.p ? out.p : "", 1, out.len, stdout);
    return rc;
}
