/* edgeworker._speedups: the C parts of the request path (optional). Each is called with plain
 * values (bytes, ints, floats, bools, tuples, lists, dicts, buffers) and reads no Python
 * object's slots; each has a Python twin that runs when this module is not built or
 * EDGEWORKER_NO_ACCEL=1 is set, and tests give the same inputs to both. bench/RESULTS.md shows
 * what each saves per request (kept only where that is at least 5 %).
 *
 * parse_request(data, ...) reads the common request that is the whole read between requests
 * (no body, nothing after it) without llhttp: a strict subset of what llhttp accepts, where the
 * rules of edgeworker/http/protocol.py and framing.py have the plain answer. It returns the
 * values of its RequestHead, or None for anything else, which llhttp and those rules then read
 * (they alone answer errors).
 *
 * parse_response_head(data, head_only) reads the common upstream response whole in the proxy's
 * first read the same way: (status, keep_alive, body, length and the fields sorted as a
 * ResponseFields sorts them), or None for anything else, which httptools then parses.
 *
 * fast_response_head(status, length, ...) is Connection._head_bytes (edgeworker/server.py) for
 * the common whole response, from the values the Python code read: the same bytes, or None.
 *
 * count_request(nums, bounds, layout, status, received, sent, seconds) is the counting of the
 * status metrics' WorkerMetrics.on_request for a request whose location has its counters.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <time.h>
#include <string.h>
#include <stdint.h>

static PyObject *s_empty_bytes;

/* n bytes at s as a new bytes object, ASCII capitals lower-cased (as bytes.lower()).
 * Made empty, then written: given the bytes, CPython returns its shared object for one
 * character, which must never be written to. */
static PyObject *
lower_bytes(const char *s, Py_ssize_t n)
{
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (r != NULL) {
        char *d = PyBytes_AS_STRING(r);
        for (Py_ssize_t i = 0; i < n; i++)
            d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    }
    return r;
}

/* s (n bytes) equals lit (lower case) ignoring ASCII case */
static int
eq_ci(const char *s, Py_ssize_t n, const char *lit, Py_ssize_t ln)
{
    if (n != ln)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != lit[i])
            return 0;
    }
    return 1;
}

#define EQ(s, n, lit) eq_ci((s), (n), (lit), (Py_ssize_t)sizeof(lit) - 1)

/* a new (a, b) tuple that takes both references; NULL (both released) when either is NULL */
static PyObject *
pair_of(PyObject *a, PyObject *b)
{
    PyObject *t = (a != NULL && b != NULL) ? PyTuple_New(2) : NULL;
    if (t == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

/* a Content-Length value of 1..18 digits (framing.content_length): its value, else -1 */
static long long
length_of(const char *v, Py_ssize_t n)
{
    if (n < 1 || n > 18)
        return -1;
    long long x = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* ------------------------------------------------------------------------- number helpers */

/* v as a long long in *out; 0 when v is not an exact int that fits */
static int
exact_ll(PyObject *v, long long *out)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int over = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &over);
    if (over || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* n >= 0 in decimal at out (no NUL); returns the length */
static int
decimal(char *out, long long n)
{
    char tmp[24];
    int len = 0;
    unsigned long long u = n < 0 ? 0 : (unsigned long long)n;
    do {
        tmp[len++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (int i = 0; i < len; i++)
        out[i] = tmp[len - 1 - i];
    return len;
}

/* ------------------------------------------------------------------ parse_response_head */

/* byte classes: TCHAR (RFC 9110 5.6.2: a field name's bytes), VBYTE (a field value's or a
 * reason phrase's: HTAB, SP, VCHAR, obs-text); filled by init_byte_classes() */
#define TCHAR 1
#define VBYTE 2
static unsigned char byte_class[256];

static void
init_byte_classes(void)
{
    for (int c = 0; c < 256; c++) {
        int t = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        int v = c == '\t' || (c >= ' ' && c != 0x7f);
        byte_class[c] = (unsigned char)((t ? TCHAR : 0) | (v ? VBYTE : 0));
    }
}

#define is_tchar(c) (byte_class[(c)] & TCHAR)
#define VALUE_BYTE(c) (byte_class[(c)] & VBYTE)

/* every one of the n bytes at p is a VBYTE: eight at a time while none is below 0x20 or 0x7f */
static int
value_bytes(const unsigned char *p, Py_ssize_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t x, del;
        memcpy(&x, p + k, 8);
        del = x ^ (0x7f * ones);
        /* a byte below 0x20 (HTAB included), or a 0x7f: look at these eight one by one */
        if (((x - 0x20 * ones) & ~x & highs) | ((del - ones) & ~del & highs)) {
            for (int j = 0; j < 8; j++)
                if (!VALUE_BYTE(p[k + j]))
                    return 0;
        }
    }
    for (; k < n; k++)
        if (!VALUE_BYTE(p[k]))
            return 0;
    return 1;
}

/* One field line of a head at d[*at] (n bytes in all). 1: a field, its name and value spans
 * (start, end, start, end) in span, *at past its CRLF; 0: the blank line that ends the head,
 * *at past it; -1: anything else (not whole in these bytes, obs-fold, a byte llhttp may refuse
 * or read otherwise). The value's leading OWS is not in its span, as llhttp reports it. */
static int
field_line(const unsigned char *d, Py_ssize_t n, Py_ssize_t *at, Py_ssize_t span[4])
{
    Py_ssize_t i = *at;
    if (i + 1 >= n)
        return -1;
    if (d[i] == '\r') {
        if (d[i + 1] != '\n')
            return -1;
        *at = i + 2;
        return 0;
    }
    span[0] = i;
    while (i < n && is_tchar(d[i]))
        i++;
    if (i == span[0] || i >= n || d[i] != ':')
        return -1; /* (a line that starts with SP/HTAB, obs-fold, lands here too) */
    span[1] = i++;
    while (i < n && (d[i] == ' ' || d[i] == '\t'))
        i++;
    span[2] = i;
    const unsigned char *cr = memchr(d + i, '\r', n - i);
    if (cr == NULL || !value_bytes(d + i, cr - d - i))
        return -1;
    i = cr - d;
    if (i + 1 >= n || d[i + 1] != '\n')
        return -1;
    span[3] = i;
    *at = i + 2;
    return 1;
}

#define RH_MAX_FIELDS 100

/* the field is hop-by-hop (or Date/Server/framing): never relayed (fields.HOP_BY_HOP) */
static int
is_hop(const char *s, Py_ssize_t n)
{
    switch (n) {
    case 2:
        return EQ(s, n, "te");
    case 4:
        return EQ(s, n, "date");
    case 6:
        return EQ(s, n, "server");
    case 7:
        return EQ(s, n, "trailer") || EQ(s, n, "upgrade");
    case 10:
        return EQ(s, n, "connection") || EQ(s, n, "keep-alive");
    case 14:
        return EQ(s, n, "content-length");
    case 16:
        return EQ(s, n, "proxy-connection");
    case 17:
        return EQ(s, n, "transfer-encoding");
    case 18:
        return EQ(s, n, "proxy-authenticate");
    }
    return 0;
}

/* The fields of spans (nf of them) sorted as ResponseFields.add sorts them: out[0] the lines of
 * the kept fields (b"\r\nName: value" each, as they go out), out[1] those of the hop-by-hop ones,
 * out[2] the index among the kept of each Location and Refresh (a list; NULL when there is
 * none), out[3] the Connection value (NULL when there is none); has_ct; -1 with an exception. */
static int
sort_response(const unsigned char *d, Py_ssize_t (*spans)[4], int nf, PyObject **out,
              int *has_ct)
{
    Py_ssize_t size[2] = {0, 0}, kept = 0;
    char hop[RH_MAX_FIELDS];
    for (int k = 0; k < nf; k++) {
        hop[k] = (char)is_hop((const char *)d + spans[k][0], spans[k][1] - spans[k][0]);
        size[(int)hop[k]] += spans[k][1] - spans[k][0] + spans[k][3] - spans[k][2] + 4;
    }
    out[0] = PyBytes_FromStringAndSize(NULL, size[0]);
    out[1] = PyBytes_FromStringAndSize(NULL, size[1]);
    out[2] = out[3] = NULL;
    if (out[0] == NULL || out[1] == NULL)
        goto fail;
    char *o[2] = {PyBytes_AS_STRING(out[0]), PyBytes_AS_STRING(out[1])};
    for (int k = 0; k < nf; k++) {
        const char *name = (const char *)d + spans[k][0], *value = (const char *)d + spans[k][2];
        Py_ssize_t nn = spans[k][1] - spans[k][0], vn = spans[k][3] - spans[k][2];
        if (hop[k]) {
            if (nn == 10 && EQ(name, nn, "connection") &&
                (out[3] = PyBytes_FromStringAndSize(value, vn)) == NULL)
                goto fail;
        }
        else if (nn == 12 && EQ(name, nn, "content-type"))
            *has_ct = 1;
        else if ((nn == 8 && EQ(name, nn, "location")) || (nn == 7 && EQ(name, nn, "refresh"))) {
            PyObject *at = PyLong_FromSsize_t(kept);
            if (out[2] == NULL)
                out[2] = PyList_New(0);
            int rc = at == NULL || out[2] == NULL ? -1 : PyList_Append(out[2], at);
            Py_XDECREF(at);
            if (rc < 0)
                goto fail;
        }
        kept += !hop[k];
        char *p = o[(int)hop[k]];
        memcpy(p, "\r\n", 2);
        memcpy(p + 2, name, nn);
        memcpy(p + 2 + nn, ": ", 2);
        memcpy(p + 4 + nn, value, vn);
        o[(int)hop[k]] = p + 4 + nn + vn;
    }
    return 0;
fail:
    for (int k = 0; k < 4; k++)
        Py_CLEAR(out[k]);
    return -1;
}

/* The common upstream response, whole in the first read: (status, keep_alive, body, length,
 * lines, hop_lines, connection, redirects, has_ct, framed), its fields sorted as
 * ResponseFields.add sorts them (the last six are a ResponseFields' slots); or None for
 * anything else, which httptools then parses (and refuses where it is invalid). It takes only a
 * strict subset of what llhttp accepts: "HTTP/1.1", a status 200..599, field names of tchar,
 * values of HTAB/SP/VCHAR/obs-text (leading OWS dropped, as llhttp does), CRLF line ends, no
 * obs-fold; at most one Connection field, which is "close" or "keep-alive" (any case); no
 * Transfer-Encoding, Upgrade or Proxy-Connection (which llhttp reads as Connection); one
 * Content-Length of 1..18 digits whose body is exactly the rest of the read, or no body at all
 * (204, 304, or a HEAD request's answer with a Content-Length) with nothing after the head.
 * Arguments: data, head_only. */
static PyObject *
parse_response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_response_head(data: bytes, head_only)");
        return NULL;
    }
    int head_only = PyObject_IsTrue(args[1]);
    if (head_only < 0)
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    /* the status line */
    if (n < 14 || memcmp(d, "HTTP/1.1 ", 9) != 0 || d[9] < '2' || d[9] > '5' ||
        d[10] < '0' || d[10] > '9' || d[11] < '0' || d[11] > '9')
        Py_RETURN_NONE;
    int status = (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
    Py_ssize_t i = 12;
    if (d[i] == ' ') {
        for (i++; i < n && d[i] != '\r'; i++)
            if (!VALUE_BYTE(d[i]))
                Py_RETURN_NONE;
    }
    if (i + 1 >= n || d[i] != '\r' || d[i + 1] != '\n')
        Py_RETURN_NONE;
    i += 2;
    /* the fields: spans first, nothing made until the whole head passed */
    Py_ssize_t spans[RH_MAX_FIELDS][4]; /* name start, name end, value start, value end */
    int nf = 0, keep_alive = 1, nconn = 0;
    long long length = -1;
    for (;;) {
        Py_ssize_t span[4];
        int got = field_line(d, n, &i, span);
        if (got == 0)
            break;
        if (got < 0 || nf == RH_MAX_FIELDS)
            Py_RETURN_NONE;
        const char *name = (const char *)d + span[0], *value = (const char *)d + span[2];
        Py_ssize_t nn = span[1] - span[0], vn = span[3] - span[2];
        if (nn == 14 && EQ(name, nn, "content-length")) {
            if (length >= 0 || (length = length_of(value, vn)) < 0)
                Py_RETURN_NONE;
        }
        else if (nn == 10 && EQ(name, nn, "connection")) {
            if (nconn++)
                Py_RETURN_NONE;
            if (EQ(value, vn, "close"))
                keep_alive = 0;
            else if (!EQ(value, vn, "keep-alive"))
                Py_RETURN_NONE;
        }
        else if ((nn == 17 && EQ(name, nn, "transfer-encoding")) ||
                 (nn == 7 && EQ(name, nn, "upgrade")) ||
                 (nn == 16 && EQ(name, nn, "proxy-connection")))
            Py_RETURN_NONE; /* (llhttp reads Proxy-Connection as Connection) */
        memcpy(spans[nf++], span, sizeof span);
    }
    /* the body: exactly the rest of the read */
    Py_ssize_t rest = n - i;
    if (status == 204 || status == 304 || (head_only && length >= 0)) {
        if (rest != 0)
            Py_RETURN_NONE;
    }
    else if (length < 0 || rest != length)
        Py_RETURN_NONE;
    PyObject *sorted[4];
    int has_ct = 0;
    if (sort_response(d, spans, nf, sorted, &has_ct) < 0)
        return NULL;
    PyObject *body = PyBytes_FromStringAndSize(rest ? (const char *)d + i : NULL, rest);
    PyObject *code = PyLong_FromLong(status);
    PyObject *len = length >= 0 ? PyLong_FromLongLong(length) : Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (body != NULL && code != NULL && len != NULL)
        result = PyTuple_Pack(10, code, keep_alive ? Py_True : Py_False, body, len, sorted[0],
                              sorted[1], sorted[3] ? sorted[3] : Py_None,
                              sorted[2] ? sorted[2] : Py_None, has_ct ? Py_True : Py_False,
                              length >= 0 ? Py_True : Py_False);
    Py_XDECREF(body);
    Py_XDECREF(code);
    Py_XDECREF(len);
    for (int k = 0; k < 4; k++)
        Py_XDECREF(sorted[k]);
    return result;
}

/* --------------------------------------------------------------------------- parse_request */

/* set by configure(): the protocol's method cache (bytes -> str), the refused methods, the Host
 * values already validated */
static PyObject *methods, *refused, *good_hosts;
static PyObject *s_version;

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *m, *r, *g;
    if (!PyArg_ParseTuple(args, "O!O!O!:configure", &PyDict_Type, &m, &PyFrozenSet_Type, &r,
                          &PySet_Type, &g))
        return NULL;
    Py_XSETREF(methods, Py_NewRef(m));
    Py_XSETREF(refused, Py_NewRef(r));
    Py_XSETREF(good_hosts, Py_NewRef(g));
    Py_RETURN_NONE;
}

#define RQ_MAX_FIELDS 100

/* GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH (s: n capital letters) */
static int
http_method(const char *s, Py_ssize_t n)
{
    switch (n) {
    case 3:
        return memcmp(s, "GET", 3) == 0 || memcmp(s, "PUT", 3) == 0;
    case 4:
        return memcmp(s, "HEAD", 4) == 0 || memcmp(s, "POST", 4) == 0;
    case 5:
        return memcmp(s, "PATCH", 5) == 0;
    case 6:
        return memcmp(s, "DELETE", 6) == 0;
    case 7:
        return memcmp(s, "OPTIONS", 7) == 0;
    }
    return 0;
}

/* The fields of a request head sorted as RequestFields.add sorts them, for the plain case
 * only (see parse_request): a new list of (lower-cased name, value without trailing SP/HTAB),
 * the last Host value (borrowed from the list) in *host, the first value of the id_field
 * field in *rid (borrowed, or NULL), *expect, *keep_alive, *cl (0, or -1 without one); NULL
 * without an exception for a head that is not plain (more than one Host, a Connection other
 * than close or keep-alive, a Content-Length that is not 0, Transfer-Encoding, Upgrade,
 * Proxy-Connection, over the limits, a "_" in a name when they are dropped). */
static PyObject *
sort_request(const unsigned char *d, Py_ssize_t (*spans)[4], int nf, PyObject *id_field,
             int drop, Py_ssize_t max_hsize, PyObject **host, PyObject **rid, int *expect,
             int *keep_alive, long long *cl)
{
    PyObject *list = PyList_New(nf);
    if (list == NULL)
        return NULL;
    Py_ssize_t size = 0;
    int nhost = 0, nconn = 0;
    for (int k = 0; k < nf; k++) {
        const char *name = (const char *)d + spans[k][0], *value = (const char *)d + spans[k][2];
        Py_ssize_t nn = spans[k][1] - spans[k][0], vn = spans[k][3] - spans[k][2];
        while (vn > 0 && (value[vn - 1] == ' ' || value[vn - 1] == '\t'))
            vn--;
        size += nn + vn + 4;
        if ((drop && memchr(name, '_', nn) != NULL) || size > max_hsize ||
            (nn == 17 && EQ(name, nn, "transfer-encoding")) ||
            (nn == 7 && EQ(name, nn, "upgrade")) || (nn == 16 && EQ(name, nn, "proxy-connection")))
            goto plain_not; /* (llhttp reads Proxy-Connection as Connection) */
        PyObject *pair = pair_of(lower_bytes(name, nn), PyBytes_FromStringAndSize(value, vn));
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, pair);
        PyObject *lname = PyTuple_GET_ITEM(pair, 0), *val = PyTuple_GET_ITEM(pair, 1);
        if (nn == 4 && EQ(name, nn, "host")) {
            nhost++;
            *host = val;
        }
        else if (nn == 6 && EQ(name, nn, "expect"))
            *expect = EQ(value, vn, "100-continue");
        else if (nn == 10 && EQ(name, nn, "connection")) {
            if (nconn++ || (!EQ(value, vn, "close") && !EQ(value, vn, "keep-alive")))
                goto plain_not;
            *keep_alive = !EQ(value, vn, "close");
        }
        else if (nn == 14 && EQ(name, nn, "content-length")) {
            if (*cl >= 0 || length_of(value, vn) != 0)
                goto plain_not;
            *cl = 0;
        }
        else if (*rid == NULL && id_field != Py_None && nn == PyBytes_GET_SIZE(id_field) &&
                 memcmp(PyBytes_AS_STRING(lname), PyBytes_AS_STRING(id_field), nn) == 0)
            *rid = val;
    }
    if (nhost == 1)
        return list;
plain_not:
    Py_DECREF(list);
    return NULL;
}

/* The common request that is the whole read, parsed without llhttp (the connection is between
 * requests; llhttp never sees these bytes): the values of its RequestHead in slot order
 * (method, target, path, query, version, headers, keep_alive, content_length, chunked,
 * expect_continue, upgrade, host, request_id, size), its fields as RequestFields.add sorts
 * them; or None for anything else, which llhttp and ServerProtocol's rules then read (they
 * alone answer errors). It takes only a strict subset of what llhttp accepts, where those rules
 * have the plain answer: GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH once the protocol has
 * seen it from llhttp (its cache gives the str) and not refused, an origin-form target of
 * visible ASCII no longer than max_url, "HTTP/1.1", field names of tchar, values of
 * HTAB/SP/VCHAR/obs-text (leading OWS dropped), CRLF line ends, no obs-fold, one Host value
 * already validated, no body (Content-Length absent or 0) and nothing after the head (no
 * pipelined request), and what sort_request calls plain. Arguments: data, drop_underscores,
 * max_headers, max_hsize, max_url, id_field (lower-case bytes or None). */
static PyObject *
parse_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyBytes_CheckExact(args[0]) ||
        (args[5] != Py_None && !PyBytes_CheckExact(args[5]))) {
        PyErr_SetString(PyExc_TypeError, "parse_request(data: bytes, drop_underscores, "
                                         "max_headers, max_hsize, max_url, id_field)");
        return NULL;
    }
    if (methods == NULL)
        Py_RETURN_NONE;
    int drop = PyObject_IsTrue(args[1]);
    Py_ssize_t max_headers = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_hsize = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_url = PyLong_AsSsize_t(args[4]);
    if (drop < 0 || ((max_headers == -1 || max_hsize == -1 || max_url == -1) && PyErr_Occurred()))
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), i = 0;
    /* the request line: method SP target SP HTTP/1.1 CRLF; the method one of the usual HTTP
     * ones (llhttp takes some methods only in RTSP or ICE request lines, and the protocol's
     * cache holds every method llhttp reported, from any line) */
    while (i < n && i < 8 && d[i] >= 'A' && d[i] <= 'Z')
        i++;
    if (i >= n || d[i] != ' ' || !http_method((const char *)d, i))
        Py_RETURN_NONE;
    Py_ssize_t method_end = i++;
    Py_ssize_t url_start = i;
    if (i >= n || d[i] != '/')
        Py_RETURN_NONE;
    while (i < n && d[i] > ' ' && d[i] < 0x7f && d[i] != '#')
        i++;
    Py_ssize_t url_end = i;
    if (url_end - url_start > max_url)
        Py_RETURN_NONE; /* the request line may be too long: measured by the Python code */
    if (n - i < 11 || memcmp(d + i, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NONE;
    i += 11;
    /* the fields: spans first */
    Py_ssize_t spans[RQ_MAX_FIELDS][4];
    int nf = 0;
    for (;;) {
        Py_ssize_t span[4];
        int got = field_line(d, n, &i, span);
        if (got == 0)
            break;
        if (got < 0 || nf == RQ_MAX_FIELDS || nf == max_headers)
            Py_RETURN_NONE;
        memcpy(spans[nf++], span, sizeof span);
    }
    if (i != n)
        Py_RETURN_NONE; /* a body or a pipelined request follows: llhttp's */
    /* the method: one llhttp has reported before (so it knows it), not refused */
    PyObject *raw = PyBytes_FromStringAndSize((const char *)d, method_end);
    if (raw == NULL)
        return NULL;
    PyObject *method = PyDict_GetItemWithError(methods, raw); /* borrowed */
    Py_DECREF(raw);
    if (method == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(method); /* (held: the cache could change while objects are made) */
    PyObject *head = NULL, *list = NULL, *host = NULL, *rid = NULL;
    PyObject *path = NULL, *query = NULL, *url = NULL, *size = NULL;
    int expect = 0, keep_alive = 1, known = PySet_Contains(refused, method);
    long long cl = -1;
    if (known != 0)
        goto out;
    list = sort_request(d, spans, nf, args[5], drop, max_hsize, &host, &rid, &expect,
                        &keep_alive, &cl);
    if (list == NULL || (known = PySet_Contains(good_hosts, host)) <= 0)
        goto out;
    url = PyBytes_FromStringAndSize((const char *)d + url_start, url_end - url_start);
    const unsigned char *q = memchr(d + url_start, '?', url_end - url_start);
    if (q == NULL) {
        path = Py_XNewRef(url);
        query = Py_NewRef(s_empty_bytes);
    }
    else {
        path = PyBytes_FromStringAndSize((const char *)d + url_start, q - d - url_start);
        query = PyBytes_FromStringAndSize((const char *)q + 1, d + url_end - q - 1);
    }
    size = PyLong_FromSsize_t(n);
    PyObject *zero = cl == 0 ? PyLong_FromLong(0) : Py_NewRef(Py_None);
    if (url != NULL && path != NULL && query != NULL && size != NULL && zero != NULL)
        head = PyTuple_Pack(14, method, url, path, query, s_version, list,
                            keep_alive ? Py_True : Py_False, zero, Py_False,
                            expect ? Py_True : Py_False, Py_None, host, rid ? rid : Py_None,
                            size);
    Py_XDECREF(zero);
out:
    if (head == NULL && !PyErr_Occurred())
        head = Py_NewRef(Py_None); /* not the plain case */
    Py_DECREF(method);
    Py_XDECREF(list);
    Py_XDECREF(url);
    Py_XDECREF(path);
    Py_XDECREF(query);
    Py_XDECREF(size);
    return head;
}

/* ------------------------------------------------------------------- fast_response_head */

/* fast_response_head(status, length, keep_alive, header_lines, fields, content_type_line,
 * status_lines, date_line, keep_line, close_line): Connection._head_bytes for the common whole
 * response, from the values it read (edgeworker/server.py): status an int with a body and a
 * line in status_lines (a dict), length an int >= 0, keep_alive a bool, header_lines bytes,
 * fields the response's own fields as one block and whether Content-Type is among them
 * ((bytes, bool); the location's content_type_line goes out unless it is), date_line the
 * Server/Date line of this second ([second, bytes]), keep_line or close_line last. The same
 * bytes as the Python code, or None for anything else, which the Python code then builds. */
static PyObject *
fast_response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char cl[] = "\r\nContent-Length: ";
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "fast_response_head() takes 10 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *status = args[0], *keep = args[2], *fields = args[4], *ctl = args[5],
             *date_line = args[7];
    long long code, n, sec;
    if (!exact_ll(status, &code) || code < 200 || code == 204 || code == 304 ||
        !exact_ll(args[1], &n) || n < 0 || !PyBool_Check(keep) ||
        !PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != 2 ||
        !PyBool_Check(PyTuple_GET_ITEM(fields, 1)) || !PyDict_CheckExact(args[6]) ||
        !PyList_CheckExact(date_line))
        Py_RETURN_NONE;
    PyObject *line = PyDict_GetItemWithError(args[6], status); /* borrowed */
    if (line == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    /* (no Python code runs from here on) the date line is this second's, as int(time.time()) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (PyList_GET_SIZE(date_line) != 2 || !exact_ll(PyList_GET_ITEM(date_line, 0), &sec) ||
        sec != (long long)ts.tv_sec)
        Py_RETURN_NONE;
    if (PyTuple_GET_ITEM(fields, 1) == Py_True)
        ctl = s_empty_bytes; /* the upstream's Content-Type stands */
    PyObject *parts[6] = {line, PyList_GET_ITEM(date_line, 1), args[3],
                          PyTuple_GET_ITEM(fields, 0), ctl, keep == Py_True ? args[8] : args[9]};
    char digits[24];
    int dn = decimal(digits, n);
    Py_ssize_t total = (Py_ssize_t)(sizeof cl - 1) + dn;
    for (int i = 0; i < 6; i++) {
        if (!PyBytes_CheckExact(parts[i]))
            Py_RETURN_NONE;
        total += PyBytes_GET_SIZE(parts[i]);
    }
    PyObject *head = PyBytes_FromStringAndSize(NULL, total);
    if (head == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(head);
    for (int i = 0; i < 6; i++) {
        if (i == 5) { /* the length before the Connection line */
            memcpy(d, cl, sizeof cl - 1);
            memcpy(d + sizeof cl - 1, digits, dn);
            d += sizeof cl - 1 + dn;
        }
        memcpy(d, PyBytes_AS_STRING(parts[i]), PyBytes_GET_SIZE(parts[i]));
        d += PyBytes_GET_SIZE(parts[i]);
    }
    return head;
}

/* ------------------------------------------------------------------------- count_request */

/* count_request(nums, bounds, layout, status, received, sent, seconds) is the counting of
 * WorkerMetrics.on_request (edgeworker/status/metrics.py) for one request whose location has
 * its slot: nums is that slot's array("q"), bounds the histogram bounds (a tuple of floats),
 * layout the indices (RECEIVED, SENT, TIME, BUCKET0, CODE0). It adds received and sent, the
 * seconds in microseconds (rounded as Python's round()), one to the histogram bucket
 * (bisect_left over bounds) and one to the status (100..599) counter, in place: nothing is
 * allocated. True once counted; False, with nothing counted, for anything else (another
 * status, a value that is not an exact int or float, a time that is not one, an odd array or
 * layout): the caller then leaves the request to on_request. */
static PyObject *
count_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyTuple_CheckExact(args[1]) || !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "count_request(nums, bounds, layout, status, "
                                         "received, sent, seconds) takes 7 arguments");
        return NULL;
    }
    PyObject *bounds = args[1], *layout = args[2];
    long long at[5], code, received, sent;
    if (PyTuple_GET_SIZE(layout) != 5 || !exact_ll(args[3], &code) || code < 100 ||
        code > 599 || !exact_ll(args[4], &received) || !exact_ll(args[5], &sent) ||
        !PyFloat_CheckExact(args[6]))
        Py_RETURN_FALSE;
    for (int i = 0; i < 5; i++)
        if (!exact_ll(PyTuple_GET_ITEM(layout, i), &at[i]) || at[i] < 0)
            Py_RETURN_FALSE;
    double t = PyFloat_AS_DOUBLE(args[6]);
    if (!(t > -1e9 && t < 1e9)) /* not a time (NaN, far off): round() in Python decides */
        Py_RETURN_FALSE;
    Py_ssize_t lo = 0, hi = PyTuple_GET_SIZE(bounds); /* bisect_left */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        PyObject *b = PyTuple_GET_ITEM(bounds, mid);
        if (!PyFloat_CheckExact(b))
            Py_RETURN_FALSE;
        if (PyFloat_AS_DOUBLE(b) < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    long long n = view.len / 8, *c = (long long *)view.buf;
    int fits = view.format != NULL && strcmp(view.format, "q") == 0 && view.itemsize == 8 &&
               at[0] < n && at[1] < n && at[2] < n && at[3] < n && at[4] < n &&
               at[3] + PyTuple_GET_SIZE(bounds) < at[4] && at[4] + 499 < n;
    if (fits) {
        c[at[0]] += received;
        c[at[1]] += sent;
        c[at[2]] += (long long)nearbyint(t * 1e6); /* round half to even, as round() */
        c[at[3] + lo] += 1;
        c[at[4] + code - 100] += 1;
    }
    PyBuffer_Release(&view);
    return Py_NewRef(fits ? Py_True : Py_False);
}

/* ---------------------------------------------------------------------------------- module */

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(methods, refused, good_hosts): the protocol's tables parse_request reads"},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, drop_underscores, max_headers, max_hsize, max_url, id_field): the "
     "head's values of the common request that is the whole of data; or None"},
    {"parse_response_head", (PyCFunction)(void (*)(void))parse_response_head, METH_FASTCALL,
     "parse_response_head(data, head_only): the common upstream response whole in data, "
     "(status, keep_alive, body, length, lines, hop_lines, connection, redirects, has_ct, "
     "framed); or None"},
    {"fast_response_head", (PyCFunction)(void (*)(void))fast_response_head, METH_FASTCALL,
     "fast_response_head(status, length, keep_alive, header_lines, fields, content_type_line, "
     "status_lines, date_line, keep_line, close_line): the common response head, or None"},
    {"count_request", (PyCFunction)(void (*)(void))count_request, METH_FASTCALL,
     "count_request(nums, bounds, layout, status, received, sent, seconds): one request "
     "counted into its location's array, True; or False (nothing counted)"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgeworker._speedups",
    "The C parts of edgeworker's request path.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_byte_classes();
    s_version = PyUnicode_InternFromString("1.1");
    s_empty_bytes = PyBytes_FromStringAndSize("", 0);
    if (s_version == NULL || s_empty_bytes == NULL)
        return NULL;
    return PyModule_Create(&module);
}
