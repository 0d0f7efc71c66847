/* edgeworker._speedups: C versions of the per-field parser callbacks and of the common request
 * head (optional).
 *
 * httptools calls a callback for every header field it parses. In Python each call costs a
 * frame and ~30-40 bytecodes; here it is one C call. Both types have a pure-Python twin in
 * edgeworker/http/fields.py with the same API and the same results (tests/unit/test_http_fields.py
 * runs the same cases through both), used when this module is not built or
 * EDGEWORKER_NO_ACCEL=1 is set.
 *
 * parse_request(data, fields, ...) reads the common request that is the whole read between
 * requests (no body, nothing after it) without llhttp: a strict subset of what llhttp accepts,
 * the plain case of ServerProtocol.on_headers_complete's rules (one Host already validated, no
 * Transfer-Encoding or Upgrade, Connection absent, keep-alive or close, an origin-form target):
 * the values of its RequestHead as a tuple, or None for anything else, which llhttp and the
 * Python rules then read (they alone answer errors). tests/unit/test_http_fields.py gives the
 * same streams to both ways.
 *
 * fast_response_head(req, length, closing) is Connection._head_bytes for the common whole
 * response (a known status with a body, no resp_headers object or a proxied response's fields
 * still prepared as one block, no add_header, the location's default Content-Type unless the
 * upstream sent one, this second's Server/Date line already made): the same bytes, or None.
 *
 * parse_response_head(data, fields, head_only) reads the common upstream response whole in the
 * proxy's first read (HTTP/1.1, plain fields, a Content-Length body that is exactly the rest of
 * the read, or no body), its fields added to a ResponseFields: (status, keep_alive, body,
 * length), or
 * None for anything else, which httptools then parses (and refuses where invalid). It has no
 * Python twin: without it httptools reads every response (tests/unit/test_proxy_response_head.py
 * reads each case both ways).
 *
 * Recorder(...) is the status metrics' WorkerMetrics.on_request for a request whose location
 * has its counters (edgeworker/status/metrics.py); every other request goes to on_request.
 *
 * RequestFields (the server's request head): add(name, value) stores (lower-cased name,
 * value without trailing SP/HTAB) in .list, counts .size (name + value + 4 per field, the
 * limits' measure), notes a "_" in a name (.underscore) and a Transfer-Encoding value whose
 * trailing whitespace holds a tab (.te_ows), and sorts out the fields that matter to framing
 * and routing as ServerProtocol.on_headers_complete reads them: .host (last) and .nhost,
 * .conn and .te (several joined with ","), .cl (int; the first problem is kept in .cl_error:
 * "duplicate Content-Length" or "invalid Content-Length"), .expect (the last Expect is
 * "100-continue"), .upgrade (last), .rid (the first value of the request-id field given to the
 * constructor). reset() starts a new head (a new list).
 *
 * ResponseFields (a proxied response head): add(name, value) sorts each field as it arrives:
 * hop-by-hop ones (and Date, Server and the framing fields) go to .hop, .connection collects
 * Connection's values, Content-Length/Transfer-Encoding set .framed and .length; every other
 * field goes to .kept as (name, value) and to .wire as b"\r\nName: value", with .has_ct for a
 * Content-Type and the index in .kept of each Location/Refresh in .redirects (None when there
 * is none). reset() forgets an interim (1xx) head.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <time.h>
#include <string.h>
#include <stdint.h>

static int decimal(char *out, long long n);

static PyObject *s_empty_bytes;

/* n bytes at s as a new bytes object, ASCII capitals lower-cased (as bytes.lower()) */
static PyObject *
lower_bytes(const char *s, Py_ssize_t n)
{
    PyObject *r = PyBytes_FromStringAndSize(s, n);
    if (r != NULL) {
        char *d = PyBytes_AS_STRING(r);
        for (Py_ssize_t i = 0; i < n; i++)
            if (d[i] >= 'A' && d[i] <= 'Z')
                d[i] += 32;
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

/* The fields of spans (nf of them) sorted as ResponseFields.add sorts them: the new lists
 * kept, wire, hop and redirects (NULL when there is none) and the Connection value (borrowed
 * from hop, or NULL), has_ct; -1 with an exception. */
static int
sort_response(const unsigned char *d, Py_ssize_t (*spans)[4], int nf, PyObject **out,
              PyObject **connection, int *has_ct)
{
    PyObject *kept = PyList_New(0), *wire = PyList_New(0), *hop = PyList_New(0), *redirects = NULL;
    if (kept == NULL || wire == NULL || hop == NULL)
        goto fail;
    for (int k = 0; k < nf; k++) {
        const char *name = (const char *)d + spans[k][0], *value = (const char *)d + spans[k][2];
        Py_ssize_t nn = spans[k][1] - spans[k][0], vn = spans[k][3] - spans[k][2];
        PyObject *pair = pair_of(PyBytes_FromStringAndSize(name, nn),
                                 PyBytes_FromStringAndSize(value, vn));
        if (pair == NULL)
            goto fail;
        if (is_hop(name, nn)) {
            if (nn == 10 && EQ(name, nn, "connection"))
                *connection = PyTuple_GET_ITEM(pair, 1);
            int rc = PyList_Append(hop, pair);
            Py_DECREF(pair);
            if (rc < 0)
                goto fail;
            continue;
        }
        if (nn == 12 && EQ(name, nn, "content-type"))
            *has_ct = 1;
        else if ((nn == 8 && EQ(name, nn, "location")) || (nn == 7 && EQ(name, nn, "refresh"))) {
            PyObject *at = PyLong_FromSsize_t(PyList_GET_SIZE(kept));
            if (redirects == NULL)
                redirects = PyList_New(0);
            if (at == NULL || redirects == NULL || PyList_Append(redirects, at) < 0) {
                Py_XDECREF(at);
                Py_DECREF(pair);
                goto fail;
            }
            Py_DECREF(at);
        }
        PyObject *line = PyBytes_FromStringAndSize(NULL, nn + vn + 4);
        if (line != NULL) {
            char *o = PyBytes_AS_STRING(line);
            memcpy(o, "\r\n", 2);
            memcpy(o + 2, name, nn);
            memcpy(o + 2 + nn, ": ", 2);
            memcpy(o + 4 + nn, value, vn);
        }
        int rc = line == NULL ? -1 : PyList_Append(kept, pair);
        if (rc == 0)
            rc = PyList_Append(wire, line);
        Py_DECREF(pair);
        Py_XDECREF(line);
        if (rc < 0)
            goto fail;
    }
    out[0] = kept;
    out[1] = wire;
    out[2] = hop;
    out[3] = redirects;
    return 0;
fail:
    Py_XDECREF(kept);
    Py_XDECREF(wire);
    Py_XDECREF(hop);
    Py_XDECREF(redirects);
    return -1;
}

/* The common upstream response, whole in the first read: (status, keep_alive, body, length,
 * kept, wire, hop, connection, redirects, has_ct, framed), its fields sorted as
 * ResponseFields.add sorts them (the last seven are a ResponseFields' slots); or None for
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
    PyObject *lists[4], *connection = NULL;
    int has_ct = 0;
    if (sort_response(d, spans, nf, lists, &connection, &has_ct) < 0)
        return NULL;
    PyObject *body = PyBytes_FromStringAndSize(rest ? (const char *)d + i : NULL, rest);
    PyObject *code = PyLong_FromLong(status);
    PyObject *len = length >= 0 ? PyLong_FromLongLong(length) : Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (body != NULL && code != NULL && len != NULL)
        result = PyTuple_Pack(11, code, keep_alive ? Py_True : Py_False, body, len, lists[0],
                              lists[1], lists[2], connection ? connection : Py_None,
                              lists[3] ? lists[3] : Py_None, has_ct ? Py_True : Py_False,
                              length >= 0 ? Py_True : Py_False);
    Py_XDECREF(body);
    Py_XDECREF(code);
    Py_XDECREF(len);
    for (int k = 0; k < 4; k++)
        Py_XDECREF(lists[k]);
    return result;
}

/* --------------------------------------------------------------------------- parse_request */

/* set by configure(): the protocol's method cache (bytes -> str), the refused methods, the Host
 * values already validated */
static PyObject *methods, *refused, *good_hosts;
static PyObject *s_version, *n_size;

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

/* The offset in an instance of class cls of its object slot (one from __slots__) `name`: the
 * class attribute `name` read the public way must be a member descriptor of cls or of one of
 * its bases, for an object member. -1 with no exception set when it is not; -1 with the
 * exception when reading the attribute fails otherwise. The offset is still read from the
 * descriptor's PyMemberDef, the one place CPython states it. */
static Py_ssize_t
member_offset(PyObject *cls, PyObject *name)
{
    PyObject *descr = PyObject_GetAttr(cls, name);
    if (descr == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
        PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(descr)) &&
        ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return offset;
}

/* ------------------------------------------------------------------- fast_response_head */

/* set by configure_response(): Request's slots read here, the status lines, the cached
 * "Server/Date" line ([second, bytes], kept by the Python code), the Connection lines */
enum { R_STATUS, R_LOCATION, R_KEEP_ALIVE, R_LINES, R_RESP_HEADERS, R_CONTENT_TYPE, R_HEAD,
       R_BODY_BYTES_SENT, R_START_TIME, R_COUNT };
static Py_ssize_t req_offsets[R_COUNT];
static PyObject *req_type, *status_lines, *date_line, *keep_line, *close_line, *headers_type;
static Py_ssize_t wire_offset; /* Headers._wire */
static PyObject *n_add_header, *n_content_type_line;

/* The offset of slot `name` (an object slot from __slots__) of class cls, or -1 with an
 * exception (a TypeError when it is no such slot). */
static Py_ssize_t
slot_offset(PyObject *cls, const char *name)
{
    PyObject *key = PyUnicode_InternFromString(name);
    if (key == NULL)
        return -1;
    Py_ssize_t offset = member_offset(cls, key);
    Py_DECREF(key);
    if (offset < 0 && !PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "%s is not a slot of %R", name, cls);
    return offset;
}

static PyObject *
configure_response(PyObject *module, PyObject *args)
{
    PyObject *cls, *lines, *date, *keep, *close, *hcls;
    if (!PyArg_ParseTuple(args, "O!O!O!SSO!:configure_response", &PyType_Type, &cls,
                          &PyDict_Type, &lines, &PyList_Type, &date, &keep, &close, &PyType_Type,
                          &hcls))
        return NULL;
    Py_ssize_t woff = slot_offset(hcls, "_wire");
    if (woff < 0)
        return NULL;
    static const char *names[R_COUNT] = {"status", "location", "keep_alive", "header_lines",
                                         "resp_fields", "content_type", "head",
                                         "body_bytes_sent", "start_time"};
    Py_ssize_t offsets[R_COUNT];
    for (int i = 0; i < R_COUNT; i++) {
        offsets[i] = slot_offset(cls, names[i]);
        if (offsets[i] < 0)
            return NULL;
    }
    memcpy(req_offsets, offsets, sizeof offsets);
    wire_offset = woff;
    Py_XSETREF(headers_type, Py_NewRef(hcls));
    Py_XSETREF(req_type, Py_NewRef(cls));
    Py_XSETREF(status_lines, Py_NewRef(lines));
    Py_XSETREF(date_line, Py_NewRef(date));
    Py_XSETREF(keep_line, Py_NewRef(keep));
    Py_XSETREF(close_line, Py_NewRef(close));
    Py_RETURN_NONE;
}

#define SLOT(obj, i) (*(PyObject **)((char *)(obj) + req_offsets[i]))

/* The head of a whole response in the common case: Connection._head_bytes' result, or None
 * when anything is unusual (the Python code then builds it). Arguments: req, length (the
 * body's), closing (the worker is exiting). */
static PyObject *
fast_response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "fast_response_head() takes 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *req = args[0], *length = args[1];
    if (req_type == NULL || !Py_IS_TYPE(req, (PyTypeObject *)req_type) || args[2] != Py_False ||
        !PyLong_CheckExact(length))
        Py_RETURN_NONE;
    PyObject *status = SLOT(req, R_STATUS), *loc = SLOT(req, R_LOCATION),
             *keep = SLOT(req, R_KEEP_ALIVE), *lines = SLOT(req, R_LINES),
             *rh = SLOT(req, R_RESP_HEADERS), *ct = SLOT(req, R_CONTENT_TYPE);
    if (status == NULL || loc == NULL || keep == NULL || lines == NULL || rh == NULL ||
        ct != Py_None || loc == Py_None || !PyLong_CheckExact(status) ||
        !PyBytes_CheckExact(lines) || (keep != Py_True && keep != Py_False))
        Py_RETURN_NONE;
    /* response fields: none, or a proxied response's, prepared as one block (Headers._wire:
     * (the fields' lines, whether Content-Type is among them)) */
    PyObject *wire = NULL;
    int has_ct = 0;
    if (rh != Py_None) {
        if (!Py_IS_TYPE(rh, (PyTypeObject *)headers_type))
            Py_RETURN_NONE;
        PyObject *w = *(PyObject **)((char *)rh + wire_offset);
        if (w == NULL || !PyTuple_CheckExact(w) || PyTuple_GET_SIZE(w) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(w, 0)) || !PyBool_Check(PyTuple_GET_ITEM(w, 1)))
            Py_RETURN_NONE;
        wire = PyTuple_GET_ITEM(w, 0);
        has_ct = PyTuple_GET_ITEM(w, 1) == Py_True;
    }
    long code = PyLong_AsLong(status);
    Py_ssize_t n = PyLong_AsSsize_t(length);
    if ((code == -1 || n == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (code < 200 || code == 204 || code == 304 || n < 0)
        Py_RETURN_NONE; /* no body, or an odd length: the Python code */
    PyObject *line = PyDict_GetItemWithError(status_lines, status); /* borrowed */
    if (line == NULL || !PyBytes_CheckExact(line))
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    /* the Server/Date line of this second, if the Python code has made it */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (PyList_GET_SIZE(date_line) != 2)
        Py_RETURN_NONE;
    PyObject *sec = PyList_GET_ITEM(date_line, 0), *date = PyList_GET_ITEM(date_line, 1);
    if (!PyLong_CheckExact(sec) || !PyBytes_CheckExact(date) ||
        PyLong_AsLongLong(sec) != (long long)ts.tv_sec)
        Py_RETURN_NONE;
    /* the location: no add_header, its default Content-Type line (attribute lookups may run
     * Python code: what was read so far is held by new references from here on) */
    PyObject *held[4] = {Py_NewRef(line), Py_NewRef(date), Py_NewRef(lines),
                         Py_NewRef(wire != NULL ? wire : s_empty_bytes)};
    PyObject *head = NULL, *ctl = NULL;
    PyObject *add = PyObject_GetAttr(loc, n_add_header);
    if (add == NULL)
        goto out;
    int has_add = PyObject_IsTrue(add);
    Py_DECREF(add);
    if (has_add != 0) {
        if (has_add > 0)
            head = Py_NewRef(Py_None);
        goto out;
    }
    if (has_ct) {
        ctl = Py_NewRef(s_empty_bytes); /* the upstream's Content-Type stands */
    } else {
        ctl = PyObject_GetAttr(loc, n_content_type_line);
        if (ctl == NULL)
            goto out;
        if (!PyBytes_CheckExact(ctl)) {
            head = Py_NewRef(Py_None);
            goto out;
        }
    }
    PyObject *conn_line = keep == Py_True ? keep_line : close_line;
    char digits[24];
    int dn = decimal(digits, n);
    static const char cl[] = "\r\nContent-Length: ";
    PyObject *parts[5] = {line, date, lines, held[3], ctl};
    Py_ssize_t total = (Py_ssize_t)(sizeof cl - 1) + dn + PyBytes_GET_SIZE(conn_line);
    for (int i = 0; i < 5; i++)
        total += PyBytes_GET_SIZE(parts[i]);
    head = PyBytes_FromStringAndSize(NULL, total);
    if (head != NULL) {
        char *d = PyBytes_AS_STRING(head);
        for (int i = 0; i < 5; i++) {
            memcpy(d, PyBytes_AS_STRING(parts[i]), PyBytes_GET_SIZE(parts[i]));
            d += PyBytes_GET_SIZE(parts[i]);
        }
        memcpy(d, cl, sizeof cl - 1);
        d += sizeof cl - 1;
        memcpy(d, digits, dn);
        d += dn;
        memcpy(d, PyBytes_AS_STRING(conn_line), PyBytes_GET_SIZE(conn_line));
    }
out:
    Py_XDECREF(ctl);
    for (int i = 0; i < 4; i++)
        Py_DECREF(held[i]);
    return head;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(methods, refused, good_hosts): the protocol's tables parse_request reads"},
    {"configure_response", configure_response, METH_VARARGS,
     "configure_response(Request, status_lines, date_line, keep_line, close_line)"},
    {"fast_response_head", (PyCFunction)(void (*)(void))fast_response_head, METH_FASTCALL,
     "fast_response_head(req, length, closing): the common response head, or None"},
    {"parse_response_head", (PyCFunction)(void (*)(void))parse_response_head, METH_FASTCALL,
     "parse_response_head(data, head_only): the common upstream response whole in data, "
     "(status, keep_alive, body, length, kept, wire, hop, connection, redirects, has_ct, "
     "framed); or None"},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, drop_underscores, max_headers, max_hsize, max_url, id_field): the "
     "head's values of the common request that is the whole of data; or None"},
    {NULL},
};

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

/* -------------------------------------------------------------------------------- Recorder */

/* Recorder(slots, buckets, layout, fallback) is WorkerMetrics.on_request
 * (edgeworker/status/metrics.py) for a request whose location already has its slot
 * [nums, other]: nums is an array("q") of layout = (RECEIVED, SENT, TIME, BUCKET0, CODE0,
 * SLOT_LEN); the request adds to its bytes received and sent, its time in microseconds
 * (rounded as Python's round()), its histogram bucket (bisect_left over `buckets`, as the
 * Python code) and its status (100..599) counter, in place: nothing is allocated. Anything else
 * (no slot yet, another status, an odd value) goes to fallback(req), the Python on_request,
 * before anything is counted. */
typedef struct {
    PyObject_HEAD
    PyObject *slots;
    PyObject *fallback;
    Py_ssize_t received, sent, time_i, bucket0, code0, slot_len;
    Py_ssize_t nb;
    double *bounds;
    vectorcallfunc vectorcall;
} Recorder;

static PyObject *n_location, *n_status, *n_head, *n_body_bytes_sent, *n_start_time;

/* A new reference to req's attribute `name`: read from its slot (index i of the request
 * class configure_response was given) when req is of that class, else looked up. */
static PyObject *
req_attr(PyObject *req, int i, PyObject *name)
{
    if (req_type != NULL && Py_IS_TYPE(req, (PyTypeObject *)req_type)) {
        PyObject *v = SLOT(req, i);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(req, name); /* (an unset slot raises AttributeError here) */
}

/* The same for a request head's size (the RequestHead class configure was given). */
static PyObject *
head_size(PyObject *head)
{
    return PyObject_GetAttr(head, n_size);
}

static PyObject *
rec_vectorcall(Recorder *r, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Recorder(req) takes one argument");
        return NULL;
    }
    PyObject *req = args[0];
    PyObject *loc = NULL, *status = NULL, *head = NULL, *size = NULL, *sent = NULL,
             *start = NULL, *nums = NULL, *result = NULL;
    Py_buffer view = {0};
    long long code, nsize, nsent;
    loc = req_attr(req, R_LOCATION, n_location);
    if (loc == NULL)
        return NULL;
    PyObject *slot = PyDict_GetItemWithError(r->slots, loc); /* borrowed */
    if (slot == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto python;
    }
    if (!PyList_CheckExact(slot) || PyList_GET_SIZE(slot) != 2)
        goto python;
    nums = Py_NewRef(PyList_GET_ITEM(slot, 0));
    if ((status = req_attr(req, R_STATUS, n_status)) == NULL ||
        (head = req_attr(req, R_HEAD, n_head)) == NULL || (size = head_size(head)) == NULL ||
        (sent = req_attr(req, R_BODY_BYTES_SENT, n_body_bytes_sent)) == NULL ||
        (start = req_attr(req, R_START_TIME, n_start_time)) == NULL)
        goto done;
    if (!exact_ll(status, &code) || code < 100 || code > 599 || !exact_ll(size, &nsize) ||
        !exact_ll(sent, &nsent) || !PyFloat_CheckExact(start))
        goto python;
    /* time.time(): CLOCK_REALTIME in ns, then as a double, as CPython makes it */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    double now = ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
    double t = now - PyFloat_AS_DOUBLE(start);
    if (!(t > -1e9 && t < 1e9)) /* a start time that is not one (NaN, far off): Python's call */
        goto python;
    if (PyObject_GetBuffer(nums, &view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        goto python;
    }
    if (view.format == NULL || strcmp(view.format, "q") != 0 || view.itemsize != 8 ||
        view.len != r->slot_len * 8) {
        PyBuffer_Release(&view);
        goto python;
    }
    Py_ssize_t lo = 0, hi = r->nb; /* bisect_left */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (r->bounds[mid] < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    long long *c = (long long *)view.buf;
    c[r->code0 - 100 + code] += 1;
    c[r->received] += nsize;
    c[r->sent] += nsent;
    c[r->time_i] += (long long)nearbyint(t * 1e6); /* round half to even, as round() */
    c[r->bucket0 + lo] += 1;
    PyBuffer_Release(&view);
    result = Py_NewRef(Py_None);
    goto done;
python:
    result = PyObject_Vectorcall(r->fallback, args, 1, NULL);
done:
    Py_XDECREF(loc);
    Py_XDECREF(nums);
    Py_XDECREF(status);
    Py_XDECREF(head);
    Py_XDECREF(size);
    Py_XDECREF(sent);
    Py_XDECREF(start);
    return result;
}

static PyObject *
rec_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *slots, *buckets, *fallback;
    Py_ssize_t received, sent, time_i, bucket0, code0, slot_len;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Recorder() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!(nnnnnn)O:Recorder", &PyDict_Type, &slots, &PyTuple_Type,
                          &buckets, &received, &sent, &time_i, &bucket0, &code0, &slot_len,
                          &fallback))
        return NULL;
    Py_ssize_t nb = PyTuple_GET_SIZE(buckets);
    if (!PyCallable_Check(fallback) || received < 0 || sent < 0 || time_i < 0 ||
        received >= bucket0 || sent >= bucket0 || time_i >= bucket0 ||
        received == sent || received == time_i || sent == time_i ||
        code0 < bucket0 + nb + 1 || slot_len != code0 + 500) {
        PyErr_SetString(PyExc_ValueError, "Recorder: bad slot layout or fallback");
        return NULL;
    }
    double *bounds = PyMem_Malloc(sizeof(double) * (nb ? nb : 1));
    if (bounds == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < nb; i++) {
        bounds[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(buckets, i));
        if (bounds[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(bounds);
            return NULL;
        }
    }
    Recorder *r = PyObject_GC_New(Recorder, type);
    if (r == NULL) {
        PyMem_Free(bounds);
        return NULL;
    }
    r->slots = Py_NewRef(slots);
    r->fallback = Py_NewRef(fallback);
    r->received = received;
    r->sent = sent;
    r->time_i = time_i;
    r->bucket0 = bucket0;
    r->code0 = code0;
    r->slot_len = slot_len;
    r->nb = nb;
    r->bounds = bounds;
    r->vectorcall = (vectorcallfunc)rec_vectorcall;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static int
rec_traverse(Recorder *r, visitproc visit, void *arg)
{
    Py_VISIT(r->slots);
    Py_VISIT(r->fallback);
    return 0;
}

static int
rec_clear(Recorder *r)
{
    Py_CLEAR(r->slots);
    Py_CLEAR(r->fallback);
    return 0;
}

static void
rec_dealloc(Recorder *r)
{
    PyObject_GC_UnTrack(r);
    rec_clear(r);
    PyMem_Free(r->bounds);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeworker._speedups.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_dealloc = (destructor)rec_dealloc,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Recorder(slots, buckets, (RECEIVED, SENT, TIME, BUCKET0, CODE0, SLOT_LEN), "
              "fallback): WorkerMetrics.on_request for locations with a slot.",
    .tp_traverse = (traverseproc)rec_traverse,
    .tp_clear = (inquiry)rec_clear,
    .tp_new = rec_new,
};

/* ---------------------------------------------------------------------------------- module */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgeworker._speedups",
    "C versions of the per-field parser callbacks and of the common request head.", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_byte_classes();
    if (PyType_Ready(&RecorderType) < 0)
        return NULL;
    s_version = PyUnicode_InternFromString("1.1");
    s_empty_bytes = PyBytes_FromStringAndSize("", 0);
    if (s_version == NULL || s_empty_bytes == NULL)
        return NULL;
#define NAME(v, text) if ((v = PyUnicode_InternFromString(text)) == NULL) return NULL
    NAME(n_size, "size");
    NAME(n_add_header, "add_header");
    NAME(n_content_type_line, "content_type_line");
    NAME(n_location, "location");
    NAME(n_status, "status");
    NAME(n_head, "head");
    NAME(n_body_bytes_sent, "body_bytes_sent");
    NAME(n_start_time, "start_time");
#undef NAME
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
