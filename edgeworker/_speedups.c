/* edgeworker._speedups: C versions of the per-field parser callbacks and of the common request
 * head (optional).
 *
 * httptools calls a callback for every header field it parses. In Python each call costs a
 * frame and ~30-40 bytecodes; here it is one C call. Both types have a pure-Python twin in
 * edgeworker/http/fields.py with the same API and the same results (tests/unit/test_http_fields.py
 * runs the same cases through both), used when this module is not built or
 * EDGEWORKER_NO_ACCEL=1 is set.
 *
 * fast_head(...) is ServerProtocol.on_headers_complete for the common head (HTTP/1.1, whole in
 * the current read, origin-form target, one Host already validated, no Transfer-Encoding or
 * Upgrade, Connection absent, keep-alive or close): the same RequestHead, or None for anything
 * else, which the Python code then handles (it alone answers errors). The protocol tests run
 * both ways on the same inputs (tests/unit/test_http_fields.py).
 *
 * parse_request(data, fields, ...) is the same head for the common request that is the whole
 * read between requests (no body, nothing after it), read without llhttp: a strict subset of
 * what llhttp accepts, through fast_head's checks (make_head); None for anything else, which
 * llhttp then parses. tests/unit/test_http_fields.py gives the same streams to both ways.
 *
 * upstream_head(method, target, fixed, raw, drop, add_xff, lines, tail) is the proxy's upstream
 * request head, the same bytes as its Python twin in edgeworker/proxy/handler.py
 * (tests/unit/test_proxy_head.py compares them).
 *
 * fast_response_head(status, length, keep_alive, header_lines, fields, content_type_line,
 * status_lines, date_line, keep_line, close_line) is Connection._head_bytes for the common
 * whole response (a known status with a body, no fields of its own or a proxied response's
 * still prepared as one block, the location's default Content-Type unless the upstream sent
 * one, this second's Server/Date line already made), from the values the Python code read:
 * the same bytes, or None.
 *
 * parse_response_head(data, fields, head_only) reads the common upstream response whole in the
 * proxy's first read (HTTP/1.1, plain fields, a Content-Length body that is exactly the rest of
 * the read, or no body), its fields added to a ResponseFields: (status, keep_alive, body,
 * length), or
 * None for anything else, which httptools then parses (and refuses where invalid). It has no
 * Python twin: without it httptools reads every response (tests/unit/test_proxy_response_head.py
 * reads each case both ways).
 *
 * count_request(nums, bounds, layout, status, received, sent, seconds) is the counting of the
 * status metrics' WorkerMetrics.on_request for a request whose location has its counters
 * (edgeworker/status/metrics.py, recorder); it declines everything else. UpstreamCounter(...) is that module's upstream_event for a peer that has its counters.
 *
 * WindowLimit(...) is the access handler of a declarative shared-dict limit keyed by
 * $binary_remote_addr (edgeworker/lib/limit/declarative.py, make_access) for an allowed
 * request; it hands a rejection, a store error or an unexpected value back to the Python
 * functions it was given.
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

static PyObject *s_dup_cl, *s_bad_cl; /* the two Content-Length errors */
static int decimal(char *out, long long n);

/* name lower-cased (ASCII, as bytes.lower()): the same object when it has no capital */
static PyObject *
lower(PyObject *b)
{
    const char *s = PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b), i;
    for (i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            break;
    if (i == n)
        return Py_NewRef(b);
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (r == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(r);
    memcpy(d, s, i);
    for (; i < n; i++)
        d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
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

/* *slot = value if *slot is None else *slot + b"," + value */
static int
join(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;
    if (old == Py_None) {
        *slot = Py_NewRef(value);
        Py_DECREF(old);
        return 0;
    }
    Py_ssize_t a = PyBytes_GET_SIZE(old), b = PyBytes_GET_SIZE(value);
    PyObject *r = PyBytes_FromStringAndSize(NULL, a + 1 + b);
    if (r == NULL)
        return -1;
    char *d = PyBytes_AS_STRING(r);
    memcpy(d, PyBytes_AS_STRING(old), a);
    d[a] = ',';
    memcpy(d + a + 1, PyBytes_AS_STRING(value), b);
    *slot = r;
    Py_DECREF(old);
    return 0;
}

static void
set(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_DECREF(old);
}

static int
check_pair(PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "add() takes 2 arguments (%zd given)", nargs);
        return -1;
    }
    if (!PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "add() takes a bytes name and a bytes value");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- RequestFields */

typedef struct {
    PyObject_HEAD
    PyObject *list;
    PyObject *id_field; /* lower-case bytes or None */
    PyObject *host, *conn, *te, *cl, *cl_error, *upgrade, *rid, *expect, *te_ows, *underscore;
    Py_ssize_t nhost, size;
} RequestFields;

static int
rq_reset_state(RequestFields *self)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return -1;
    Py_XSETREF(self->list, list);
    Py_XSETREF(self->host, Py_NewRef(Py_None));
    Py_XSETREF(self->conn, Py_NewRef(Py_None));
    Py_XSETREF(self->te, Py_NewRef(Py_None));
    Py_XSETREF(self->cl, Py_NewRef(Py_None));
    Py_XSETREF(self->cl_error, Py_NewRef(Py_None));
    Py_XSETREF(self->upgrade, Py_NewRef(Py_None));
    Py_XSETREF(self->rid, Py_NewRef(Py_None));
    Py_XSETREF(self->expect, Py_NewRef(Py_False));
    Py_XSETREF(self->te_ows, Py_NewRef(Py_False));
    Py_XSETREF(self->underscore, Py_NewRef(Py_False));
    self->nhost = 0;
    self->size = 0;
    return 0;
}

static int
rq_init(RequestFields *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"id_field", NULL};
    PyObject *id_field = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:RequestFields", kwlist, &id_field))
        return -1;
    if (id_field != Py_None && !PyBytes_Check(id_field)) {
        PyErr_SetString(PyExc_TypeError, "id_field must be bytes or None");
        return -1;
    }
    Py_XSETREF(self->id_field, Py_NewRef(id_field));
    return rq_reset_state(self);
}

/* (an instance made with __new__ alone is usable too: every slot set) */
static PyObject *
rq_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    RequestFields *self = (RequestFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->id_field = Py_NewRef(Py_None);
    if (rq_reset_state(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
rq_reset(RequestFields *self, PyObject *unused)
{
    if (rq_reset_state(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* one Content-Length field: .cl, or the first problem in .cl_error; -1 on MemoryError */
static int
rq_content_length(RequestFields *self, PyObject *value)
{
    if (self->cl != Py_None) {
        if (self->cl_error == Py_None)
            set(&self->cl_error, s_dup_cl);
        return 0;
    }
    const char *v = PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    int ok = n > 0 && n <= 18;
    long long x = 0;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            ok = 0;
        else
            x = x * 10 + (v[i] - '0');
    }
    if (!ok) {
        if (self->cl_error == Py_None)
            set(&self->cl_error, s_bad_cl);
        return 0;
    }
    PyObject *cl = PyLong_FromLongLong(x);
    if (cl == NULL)
        return -1;
    Py_SETREF(self->cl, cl);
    return 0;
}

static PyObject *
rq_add(RequestFields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_pair(args, nargs) < 0)
        return NULL;
    PyObject *value = args[1];
    const char *v = PyBytes_AS_STRING(value);
    Py_ssize_t vn = PyBytes_GET_SIZE(value), sn = vn;
    while (sn > 0 && (v[sn - 1] == ' ' || v[sn - 1] == '\t'))
        sn--;
    PyObject *name = lower(args[0]);
    if (name == NULL)
        return NULL;
    PyObject *stripped = sn == vn ? Py_NewRef(value) : PyBytes_FromStringAndSize(v, sn);
    if (stripped == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    int rc = 0;
    PyObject *pair = PyTuple_Pack(2, name, stripped);
    if (pair == NULL || PyList_Append(self->list, pair) < 0)
        goto fail;
    self->size += n + sn + 4;
    if (memchr(s, '_', n) != NULL)
        set(&self->underscore, Py_True);
    switch (n) {
    case 4:
        if (memcmp(s, "host", 4) == 0) {
            self->nhost++;
            set(&self->host, stripped);
            goto done;
        }
        break;
    case 6:
        if (memcmp(s, "expect", 6) == 0) {
            set(&self->expect, EQ(PyBytes_AS_STRING(stripped), sn, "100-continue") ? Py_True
                                                                                 : Py_False);
            goto done;
        }
        break;
    case 7:
        if (memcmp(s, "upgrade", 7) == 0) {
            set(&self->upgrade, stripped);
            goto done;
        }
        break;
    case 10:
        if (memcmp(s, "connection", 10) == 0) {
            rc = join(&self->conn, stripped);
            goto done;
        }
        break;
    case 14:
        if (memcmp(s, "content-length", 14) == 0) {
            rc = rq_content_length(self, stripped);
            goto done;
        }
        break;
    case 17:
        if (memcmp(s, "transfer-encoding", 17) == 0) {
            /* llhttp does not take "chunked<HTAB>" as chunked and fails only after the head */
            if (sn != vn && memchr(v + sn, '\t', vn - sn) != NULL)
                set(&self->te_ows, Py_True);
            rc = join(&self->te, stripped);
            goto done;
        }
        break;
    }
    if (self->rid == Py_None && self->id_field != Py_None &&
        PyBytes_GET_SIZE(self->id_field) == n &&
        memcmp(PyBytes_AS_STRING(self->id_field), s, n) == 0)
        set(&self->rid, stripped);
done:
    Py_DECREF(pair);
    Py_DECREF(name);
    Py_DECREF(stripped);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
fail:
    Py_XDECREF(pair);
    Py_DECREF(name);
    Py_DECREF(stripped);
    return NULL;
}

static int
rq_traverse(RequestFields *self, visitproc visit, void *arg)
{
    Py_VISIT(self->list);
    return 0;
}

static int
rq_clear(RequestFields *self)
{
    Py_CLEAR(self->list);
    Py_CLEAR(self->id_field);
    Py_CLEAR(self->host);
    Py_CLEAR(self->conn);
    Py_CLEAR(self->te);
    Py_CLEAR(self->cl);
    Py_CLEAR(self->cl_error);
    Py_CLEAR(self->upgrade);
    Py_CLEAR(self->rid);
    Py_CLEAR(self->expect);
    Py_CLEAR(self->te_ows);
    Py_CLEAR(self->underscore);
    return 0;
}

static void
rq_dealloc(RequestFields *self)
{
    PyObject_GC_UnTrack(self);
    rq_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define RQ(name) offsetof(RequestFields, name)
static PyMemberDef rq_members[] = {
    {"list", T_OBJECT_EX, RQ(list), READONLY, "[(lower-cased name, value)] in order"},
    {"id_field", T_OBJECT_EX, RQ(id_field), READONLY, "the request-id field's name, or None"},
    {"host", T_OBJECT_EX, RQ(host), READONLY, "the last Host value, or None"},
    {"nhost", T_PYSSIZET, RQ(nhost), READONLY, "how many Host fields"},
    {"conn", T_OBJECT_EX, RQ(conn), READONLY, "Connection values joined with ',', or None"},
    {"te", T_OBJECT_EX, RQ(te), READONLY, "Transfer-Encoding values joined with ',', or None"},
    {"cl", T_OBJECT_EX, RQ(cl), READONLY, "the Content-Length, or None"},
    {"cl_error", T_OBJECT_EX, RQ(cl_error), READONLY, "the first Content-Length problem"},
    {"expect", T_OBJECT_EX, RQ(expect), READONLY, "the last Expect is 100-continue"},
    {"upgrade", T_OBJECT_EX, RQ(upgrade), READONLY, "the last Upgrade value, or None"},
    {"rid", T_OBJECT_EX, RQ(rid), READONLY, "the first request-id value, or None"},
    {"te_ows", T_OBJECT_EX, RQ(te_ows), READONLY, "a Transfer-Encoding ended in OWS with a tab"},
    {"underscore", T_OBJECT_EX, RQ(underscore), READONLY, "a name holds '_'"},
    {"size", T_PYSSIZET, RQ(size), READONLY, "sum of len(name) + len(value) + 4"},
    {NULL},
};

static PyMethodDef rq_methods[] = {
    {"add", (PyCFunction)(void (*)(void))rq_add, METH_FASTCALL, "add(name, value): one field"},
    {"reset", (PyCFunction)rq_reset, METH_NOARGS, "start a new field section"},
    {NULL},
};

static PyTypeObject RequestFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeworker._speedups.RequestFields",
    .tp_basicsize = sizeof(RequestFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of a request head, sorted as they are parsed.",
    .tp_new = rq_new,
    .tp_init = (initproc)rq_init,
    .tp_dealloc = (destructor)rq_dealloc,
    .tp_traverse = (traverseproc)rq_traverse,
    .tp_clear = (inquiry)rq_clear,
    .tp_members = rq_members,
    .tp_methods = rq_methods,
};

/* ------------------------------------------------------------------------ ResponseFields */

typedef struct {
    PyObject_HEAD
    PyObject *kept, *wire, *hop, *connection, *redirects, *length, *has_ct, *framed;
} ResponseFields;

static int
rs_reset_state(ResponseFields *self)
{
    PyObject *kept = PyList_New(0), *wire = PyList_New(0), *hop = PyList_New(0);
    if (kept == NULL || wire == NULL || hop == NULL) {
        Py_XDECREF(kept);
        Py_XDECREF(wire);
        Py_XDECREF(hop);
        return -1;
    }
    Py_XSETREF(self->kept, kept);
    Py_XSETREF(self->wire, wire);
    Py_XSETREF(self->hop, hop);
    Py_XSETREF(self->connection, Py_NewRef(Py_None));
    Py_XSETREF(self->redirects, Py_NewRef(Py_None));
    Py_XSETREF(self->length, Py_NewRef(Py_None));
    Py_XSETREF(self->has_ct, Py_NewRef(Py_False));
    Py_XSETREF(self->framed, Py_NewRef(Py_False));
    return 0;
}

static int
rs_init(ResponseFields *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "ResponseFields() takes no positional arguments");
        return -1;
    }
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "ResponseFields() takes no keyword arguments");
        return -1;
    }
    return rs_reset_state(self);
}

/* (an instance made with __new__ alone is usable too: every slot set) */
static PyObject *
rs_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ResponseFields *self = (ResponseFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (rs_reset_state(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
rs_reset(ResponseFields *self, PyObject *unused)
{
    if (rs_reset_state(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* the field is hop-by-hop (or Date/Server/framing): never relayed */
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

static PyObject *
rs_add(ResponseFields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_pair(args, nargs) < 0)
        return NULL;
    PyObject *name = args[0], *value = args[1];
    const char *s = PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    if (is_hop(s, n)) {
        PyObject *pair = PyTuple_Pack(2, name, value);
        if (pair == NULL)
            return NULL;
        int rc = PyList_Append(self->hop, pair);
        Py_DECREF(pair);
        if (rc < 0)
            return NULL;
        if (n == 10 && EQ(s, n, "connection")) {
            if (join(&self->connection, value) < 0)
                return NULL;
        }
        else if (n == 14 && EQ(s, n, "content-length")) {
            set(&self->framed, Py_True);
            const char *v = PyBytes_AS_STRING(value);
            Py_ssize_t vn = PyBytes_GET_SIZE(value), i;
            for (i = 0; i < vn; i++)
                if (v[i] < '0' || v[i] > '9')
                    break;
            if (vn > 0 && i == vn) { /* value.isdigit(): int(value) */
                PyObject *length = PyLong_FromString(v, NULL, 10);
                if (length == NULL)
                    return NULL;
                Py_SETREF(self->length, length);
            }
        }
        else if (n == 17 && EQ(s, n, "transfer-encoding")) {
            set(&self->framed, Py_True);
            set(&self->length, Py_None);
        }
        Py_RETURN_NONE;
    }
    if (n == 12 && EQ(s, n, "content-type"))
        set(&self->has_ct, Py_True);
    else if ((n == 8 && EQ(s, n, "location")) || (n == 7 && EQ(s, n, "refresh"))) {
        if (self->redirects == Py_None) {
            PyObject *r = PyList_New(0);
            if (r == NULL)
                return NULL;
            Py_SETREF(self->redirects, r);
        }
        PyObject *i = PyLong_FromSsize_t(PyList_GET_SIZE(self->kept));
        if (i == NULL)
            return NULL;
        int rc = PyList_Append(self->redirects, i);
        Py_DECREF(i);
        if (rc < 0)
            return NULL;
    }
    Py_ssize_t vn = PyBytes_GET_SIZE(value);
    PyObject *line = PyBytes_FromStringAndSize(NULL, n + vn + 4);
    if (line == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(line);
    d[0] = '\r';
    d[1] = '\n';
    memcpy(d + 2, s, n);
    d[n + 2] = ':';
    d[n + 3] = ' ';
    memcpy(d + n + 4, PyBytes_AS_STRING(value), vn);
    PyObject *pair = PyTuple_Pack(2, name, value);
    int rc = pair == NULL ? -1 : PyList_Append(self->kept, pair);
    if (rc == 0)
        rc = PyList_Append(self->wire, line);
    Py_XDECREF(pair);
    Py_DECREF(line);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
rs_traverse(ResponseFields *self, visitproc visit, void *arg)
{
    Py_VISIT(self->kept);
    Py_VISIT(self->wire);
    Py_VISIT(self->hop);
    Py_VISIT(self->redirects);
    return 0;
}

static int
rs_clear(ResponseFields *self)
{
    Py_CLEAR(self->kept);
    Py_CLEAR(self->wire);
    Py_CLEAR(self->hop);
    Py_CLEAR(self->connection);
    Py_CLEAR(self->redirects);
    Py_CLEAR(self->length);
    Py_CLEAR(self->has_ct);
    Py_CLEAR(self->framed);
    return 0;
}

static void
rs_dealloc(ResponseFields *self)
{
    PyObject_GC_UnTrack(self);
    rs_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define RS(name) offsetof(ResponseFields, name)
static PyMemberDef rs_members[] = {
    {"kept", T_OBJECT_EX, RS(kept), READONLY, "[(name, value)] relayed to the client"},
    {"wire", T_OBJECT_EX, RS(wire), READONLY, "the kept fields as b'\\r\\nName: value'"},
    {"hop", T_OBJECT_EX, RS(hop), READONLY, "[(name, value)] never relayed"},
    {"connection", T_OBJECT_EX, RS(connection), READONLY, "Connection values, or None"},
    {"redirects", T_OBJECT_EX, RS(redirects), READONLY, "indexes of Location/Refresh in kept"},
    {"length", T_OBJECT_EX, RS(length), READONLY, "the Content-Length, or None"},
    {"has_ct", T_OBJECT_EX, RS(has_ct), READONLY, "a kept field is Content-Type"},
    {"framed", T_OBJECT_EX, RS(framed), READONLY, "Content-Length or Transfer-Encoding came"},
    {NULL},
};

static PyMethodDef rs_methods[] = {
    {"add", (PyCFunction)(void (*)(void))rs_add, METH_FASTCALL, "add(name, value): one field"},
    {"reset", (PyCFunction)rs_reset, METH_NOARGS, "forget the fields (an interim response)"},
    {NULL},
};

static PyTypeObject ResponseFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeworker._speedups.ResponseFields",
    .tp_basicsize = sizeof(ResponseFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of a proxied response head, sorted as they are parsed.",
    .tp_new = rs_new,
    .tp_init = (initproc)rs_init,
    .tp_dealloc = (destructor)rs_dealloc,
    .tp_traverse = (traverseproc)rs_traverse,
    .tp_clear = (inquiry)rs_clear,
    .tp_members = rs_members,
    .tp_methods = rs_methods,
};

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

typedef PyObject *(*addfunc)(PyObject *, PyObject *const *, Py_ssize_t);

/* add(fields, (name, value)) for each of the nf spans of d, in order; -1 with an exception */
static int
add_fields(PyObject *fields, addfunc add, const unsigned char *d, Py_ssize_t (*spans)[4], int nf)
{
    for (int k = 0; k < nf; k++) {
        PyObject *pair[2];
        pair[0] = PyBytes_FromStringAndSize((const char *)d + spans[k][0],
                                            spans[k][1] - spans[k][0]);
        pair[1] = PyBytes_FromStringAndSize((const char *)d + spans[k][2],
                                            spans[k][3] - spans[k][2]);
        PyObject *r = NULL;
        if (pair[0] != NULL && pair[1] != NULL)
            r = add(fields, pair, 2);
        Py_XDECREF(pair[0]);
        Py_XDECREF(pair[1]);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

#define RH_MAX_FIELDS 100

/* The common upstream response, whole in the first read: (status, keep_alive, body, length: the
 * Content-Length or None, as fields.length) with every
 * field added to `fields` (a ResponseFields) in order, as httptools would have handed them to
 * its add(); or None, with `fields` untouched, for anything else, which httptools then parses
 * (and refuses where it is invalid). It takes only a strict subset of what llhttp accepts:
 * "HTTP/1.1", a status 200..599, field names of tchar, values of HTAB/SP/VCHAR/obs-text (leading
 * OWS dropped, as llhttp does), CRLF line ends, no obs-fold; at most one Connection field, which
 * is "close" or "keep-alive" (any case); no Transfer-Encoding, Upgrade or Proxy-Connection
 * (which llhttp reads as Connection); one Content-Length of
 * 1..18 digits whose body is exactly the rest of the read, or no body at all (204, 304, or a
 * HEAD request's answer with a Content-Length) with nothing after the head. Arguments: data,
 * fields, head_only. */
static PyObject *
parse_response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "parse_response_head() takes 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0]) || !Py_IS_TYPE(args[1], &ResponseFieldsType)) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_response_head() takes bytes and a ResponseFields");
        return NULL;
    }
    int head_only = PyObject_IsTrue(args[2]);
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
    /* the fields: spans first, nothing stored until the whole head passed */
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
            if (length >= 0 || vn < 1 || vn > 18)
                Py_RETURN_NONE;
            length = 0;
            for (Py_ssize_t k = 0; k < vn; k++) {
                if (value[k] < '0' || value[k] > '9')
                    Py_RETURN_NONE;
                length = length * 10 + (value[k] - '0');
            }
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
    /* every field to fields.add, in order */
    if (add_fields(args[1], (addfunc)rs_add, d, spans, nf) < 0)
        return NULL;
    PyObject *body = rest == 0 ? PyBytes_FromStringAndSize(NULL, 0)
                               : PyBytes_FromStringAndSize((const char *)d + i, rest);
    PyObject *code = body == NULL ? NULL : PyLong_FromLong(status);
    PyObject *result = code == NULL ? NULL : PyTuple_New(4);
    if (result == NULL) {
        Py_XDECREF(body);
        Py_XDECREF(code);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, code);
    PyTuple_SET_ITEM(result, 1, Py_NewRef(keep_alive ? Py_True : Py_False));
    PyTuple_SET_ITEM(result, 2, body);
    PyTuple_SET_ITEM(result, 3, Py_NewRef(((ResponseFields *)args[1])->length));
    return result;
}

/* ------------------------------------------------------------------------------ fast_head */

/* set by configure(): the RequestHead class, the protocol's method cache (bytes -> str), the
 * refused methods, the Host values already validated */
static PyObject *head_type, *methods, *refused, *good_hosts;
static PyObject *s_version, *s_empty_bytes, *s_get_method;
static PyObject *n_method, *n_target, *n_path, *n_query, *n_version, *n_headers, *n_keep_alive,
    *n_content_length, *n_chunked, *n_expect_continue, *n_upgrade, *n_host, *n_request_id,
    *n_size;

/* RequestHead's slots, in this order: their offsets in an instance (set by configure) */
enum { H_METHOD, H_TARGET, H_PATH, H_QUERY, H_VERSION, H_HEADERS, H_KEEP_ALIVE,
       H_CONTENT_LENGTH, H_CHUNKED, H_EXPECT_CONTINUE, H_UPGRADE, H_HOST, H_REQUEST_ID, H_SIZE,
       H_COUNT };
static Py_ssize_t head_offsets[H_COUNT];

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

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *h, *m, *r, *g;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:configure", &PyType_Type, &h, &PyDict_Type, &m,
                          &PyFrozenSet_Type, &r, &PySet_Type, &g))
        return NULL;
    PyObject *names[H_COUNT] = {n_method, n_target, n_path, n_query, n_version, n_headers,
                                n_keep_alive, n_content_length, n_chunked, n_expect_continue,
                                n_upgrade, n_host, n_request_id, n_size};
    Py_ssize_t offsets[H_COUNT]; /* (the tables change only once all is checked) */
    for (int i = 0; i < H_COUNT; i++) {
        offsets[i] = member_offset(h, names[i]);
        if (offsets[i] < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%R is not a slot of the head class", names[i]);
            return NULL;
        }
    }
    if (((PyTypeObject *)h)->tp_itemsize != 0) {
        PyErr_SetString(PyExc_TypeError, "the head class has variable-size instances");
        return NULL;
    }
    memcpy(head_offsets, offsets, sizeof offsets);
    Py_XSETREF(head_type, Py_NewRef(h));
    Py_XSETREF(methods, Py_NewRef(m));
    Py_XSETREF(refused, Py_NewRef(r));
    Py_XSETREF(good_hosts, Py_NewRef(g));
    Py_RETURN_NONE;
}

/* The RequestHead of a head whose request line, fields (in f) and end (`end` bytes from the
 * read's start) are known to be right: ServerProtocol.on_headers_complete's result, or None
 * when anything is unusual (the Python code then decides, and answers any error). `method` is
 * the method's str (from the protocol's cache). */
static PyObject *
make_head(RequestFields *f, PyObject *method, PyObject *url, Py_ssize_t end, int drop,
          Py_ssize_t max_headers, Py_ssize_t max_hsize)
{
    /* the fields: nothing the Python code would refuse or treat specially */
    if (PyList_GET_SIZE(f->list) > max_headers || f->size > max_hsize ||
        f->cl_error != Py_None || f->te != Py_None || f->te_ows != Py_False ||
        f->upgrade != Py_None || (drop && f->underscore != Py_False) || f->nhost != 1)
        Py_RETURN_NONE;
    int known = PySet_Contains(good_hosts, f->host);
    if (known <= 0)
        return known < 0 ? NULL : Py_NewRef(Py_None);
    /* Connection: absent, keep-alive or close (any case) */
    int keep_alive = 1;
    if (f->conn != Py_None) {
        const char *c = PyBytes_AS_STRING(f->conn);
        Py_ssize_t cn = PyBytes_GET_SIZE(f->conn);
        if (EQ(c, cn, "close"))
            keep_alive = 0;
        else if (!EQ(c, cn, "keep-alive"))
            Py_RETURN_NONE;
    }
    /* origin-form target without a fragment */
    const char *u = PyBytes_AS_STRING(url);
    Py_ssize_t un = PyBytes_GET_SIZE(url);
    if (un == 0 || u[0] != '/' || memchr(u, '#', un) != NULL)
        Py_RETURN_NONE;
    /* the method allowed */
    int bad = PySet_Contains(refused, method);
    if (bad != 0)
        return bad < 0 ? NULL : Py_NewRef(Py_None);
    /* path and query */
    PyObject *path, *query;
    const char *q = memchr(u, '?', un);
    if (q == NULL) {
        path = Py_NewRef(url);
        query = Py_NewRef(s_empty_bytes);
    }
    else {
        path = PyBytes_FromStringAndSize(u, q - u);
        query = PyBytes_FromStringAndSize(q + 1, un - (q - u) - 1);
    }
    Py_ssize_t total = end;
    if (f->cl != Py_None) {
        Py_ssize_t cl = PyLong_AsSsize_t(f->cl);
        if (cl == -1 && PyErr_Occurred())
            PyErr_Clear(); /* (18 digits always fit) */
        else
            total += cl;
    }
    PyObject *size = PyLong_FromSsize_t(total);
    PyObject *head = NULL;
    if (path == NULL || query == NULL || size == NULL)
        goto done;
    /* a new RequestHead (as object.__new__), its slots stored at their offsets */
    head = ((PyTypeObject *)head_type)->tp_alloc((PyTypeObject *)head_type, 0);
    if (head == NULL)
        goto done;
    PyObject *values[H_COUNT] = {method, url, path, query, s_version, f->list,
                                 keep_alive ? Py_True : Py_False, f->cl, Py_False, f->expect,
                                 Py_None, f->host, f->rid, size};
    for (int i = 0; i < H_COUNT; i++) {
        PyObject **slot = (PyObject **)((char *)head + head_offsets[i]);
        Py_XSETREF(*slot, Py_NewRef(values[i]));
    }
done:
    Py_XDECREF(path);
    Py_XDECREF(query);
    Py_XDECREF(size);
    return head;
}

/* drop_underscores, max_headers, max_hsize: the last three arguments of both functions below */
static int
head_limits(PyObject *const *args, int *drop, Py_ssize_t *max_headers, Py_ssize_t *max_hsize)
{
    *drop = PyObject_IsTrue(args[0]);
    *max_headers = PyLong_AsSsize_t(args[1]);
    *max_hsize = PyLong_AsSsize_t(args[2]);
    if (*drop < 0 || (*max_headers == -1 && PyErr_Occurred()) ||
        (*max_hsize == -1 && PyErr_Occurred()))
        return -1;
    return 0;
}

static PyObject *fast_head_at(PyObject *const *, PyObject *, Py_ssize_t, PyObject *,
                              PyObject *);

/* The common request head, whole in the current read, after llhttp parsed it: see make_head.
 * Arguments: parser, fields (RequestFields), url, data (the current read, the head at its
 * start), drop_underscores, max_headers, max_hsize. */
static PyObject *
fast_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "fast_head() takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    if (head_type == NULL || !Py_IS_TYPE(args[1], &RequestFieldsType) ||
        !PyBytes_CheckExact(args[2]) || !PyBytes_CheckExact(args[3]))
        Py_RETURN_NONE;
    PyObject *parser = args[0], *url = args[2], *data = args[3];
    /* the method, known */
    PyObject *raw = PyObject_CallMethodNoArgs(parser, s_get_method);
    if (raw == NULL)
        return NULL;
    if (!PyBytes_CheckExact(raw)) {
        Py_DECREF(raw);
        Py_RETURN_NONE;
    }
    PyObject *method = PyDict_GetItemWithError(methods, raw); /* borrowed */
    Py_ssize_t at = PyBytes_GET_SIZE(raw) + PyBytes_GET_SIZE(url) + 1;
    Py_DECREF(raw);
    if (method == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(method); /* (held while the head is made: the cache could change) */
    PyObject *head = fast_head_at(args, method, at, url, data);
    Py_DECREF(method);
    return head;
}

/* fast_head once its method is known (held by the caller) */
static PyObject *
fast_head_at(PyObject *const *args, PyObject *method, Py_ssize_t at, PyObject *url,
             PyObject *data)
{
    int drop;
    Py_ssize_t max_headers, max_hsize;
    if (head_limits(args + 4, &drop, &max_headers, &max_hsize) < 0)
        return NULL;
    /* HTTP/1.1, the head from the read's first byte, its end */
    const char *d = PyBytes_AS_STRING(data);
    Py_ssize_t dn = PyBytes_GET_SIZE(data);
    if (dn == 0 || (unsigned char)d[0] <= 32 || at + 11 > dn ||
        memcmp(d + at, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NONE;
    Py_ssize_t end = -1;
    for (Py_ssize_t i = 0; i + 3 < dn; i++) { /* data.find(b"\r\n\r\n") */
        if (d[i] == '\r' && d[i + 1] == '\n' && d[i + 2] == '\r' && d[i + 3] == '\n') {
            end = i + 4;
            break;
        }
    }
    if (end < 0)
        Py_RETURN_NONE;
    /* no Proxy-Connection: llhttp reads it as Connection (the Python code asks llhttp) */
    RequestFields *f = (RequestFields *)args[1];
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(f->list); k++) {
        PyObject *field = PyList_GET_ITEM(f->list, k);
        if (PyTuple_CheckExact(field) && PyTuple_GET_SIZE(field) == 2) {
            PyObject *fname = PyTuple_GET_ITEM(field, 0);
            if (PyBytes_CheckExact(fname) && PyBytes_GET_SIZE(fname) == 16 &&
                memcmp(PyBytes_AS_STRING(fname), "proxy-connection", 16) == 0)
                Py_RETURN_NONE;
        }
    }
    return make_head(f, method, url, end, drop, max_headers, max_hsize);
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

/* The common request that is the whole read, parsed without llhttp (the connection is between
 * requests; llhttp never sees these bytes): its RequestHead (see make_head), every field added
 * to `fields` (reset first) as llhttp would have handed them to its add(); or None for anything
 * else, which llhttp then parses (and refuses where invalid; `fields` is reset again when it
 * begins). It takes only a strict subset of what llhttp accepts: GET, HEAD, POST, PUT, DELETE,
 * OPTIONS or PATCH once the protocol has seen it from llhttp (its cache gives the str), an
 * origin-form target of visible ASCII, "HTTP/1.1", no Proxy-Connection field,
 * field names of tchar, values of HTAB/SP/VCHAR/obs-text (leading OWS dropped), CRLF line
 * ends, no obs-fold, no body (Content-Length absent or 0) and nothing after the head (no
 * pipelined request), a target no longer than max_url (longer ones are measured by the Python
 * code). Arguments: data, fields, drop_underscores, max_headers, max_hsize, max_url. */
static PyObject *
parse_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "parse_request() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0]) || !Py_IS_TYPE(args[1], &RequestFieldsType)) {
        PyErr_SetString(PyExc_TypeError, "parse_request() takes bytes and a RequestFields");
        return NULL;
    }
    if (head_type == NULL)
        Py_RETURN_NONE;
    int drop;
    Py_ssize_t max_headers, max_hsize;
    if (head_limits(args + 2, &drop, &max_headers, &max_hsize) < 0)
        return NULL;
    Py_ssize_t max_url = PyLong_AsSsize_t(args[5]);
    if (max_url == -1 && PyErr_Occurred())
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
        if (got < 0 || nf == RQ_MAX_FIELDS)
            Py_RETURN_NONE;
        if (span[1] - span[0] == 16 && EQ((const char *)d + span[0], 16, "proxy-connection"))
            Py_RETURN_NONE; /* llhttp reads it as Connection */
        memcpy(spans[nf++], span, sizeof span);
    }
    if (i != n)
        Py_RETURN_NONE; /* a body or a pipelined request follows: llhttp's */
    /* the method: one llhttp has reported before (so it knows it) */
    PyObject *raw = PyBytes_FromStringAndSize((const char *)d, method_end);
    if (raw == NULL)
        return NULL;
    PyObject *method = PyDict_GetItemWithError(methods, raw); /* borrowed */
    Py_DECREF(raw);
    if (method == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(method); /* (held while fields are added: the cache could change) */
    /* every field to fields.add, in order, into a fresh section */
    RequestFields *f = (RequestFields *)args[1];
    PyObject *head = NULL, *url = NULL;
    if (rq_reset_state(f) < 0)
        goto out;
    if (add_fields((PyObject *)f, (addfunc)rq_add, d, spans, nf) < 0)
        goto out;
    /* no body (it would follow the head: llhttp's), unless Content-Length says 0 */
    if (f->cl != Py_None) {
        Py_ssize_t cl = PyLong_AsSsize_t(f->cl);
        if (cl != 0) {
            PyErr_Clear(); /* (an overflow: not 0 either) */
            head = Py_NewRef(Py_None);
            goto out;
        }
    }
    /* the target: the whole of what llhttp would report (the line is checked up to it) */
    url = PyBytes_FromStringAndSize((const char *)d + url_start, url_end - url_start);
    if (url != NULL)
        head = make_head(f, method, url, n, drop, max_headers, max_hsize);
out:
    Py_DECREF(method);
    Py_XDECREF(url);
    return head;
}

/* -------------------------------------------------------------------------- upstream_head */

#define UH_MAX_FIELDS 128
#define UH_MAX_TOKENS 64

/* The proxy's upstream request head: edgeworker/proxy/handler.py's upstream_head(method,
 * target, fixed, raw, drop, add_xff, lines, tail), the same bytes; None for what it leaves to
 * that function (more than UH_MAX_FIELDS fields or UH_MAX_TOKENS Connection tokens, a field
 * that is not a pair of bytes, a method that is not an ASCII str). */
static PyObject *
upstream_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError, "upstream_head() takes 8 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *method = args[0], *target = args[1], *fixed = args[2], *raw = args[3];
    PyObject *drop = args[4], *lines = args[6], *tail = args[7];
    if (!PyUnicode_CheckExact(method) || !PyUnicode_IS_ASCII(method) ||
        !PyBytes_CheckExact(target) || !PyBytes_CheckExact(fixed) || !PyList_CheckExact(raw) ||
        !PyAnySet_Check(drop) || !PyTuple_CheckExact(lines) || PyTuple_GET_SIZE(lines) != 3 ||
        !PyBytes_CheckExact(tail))
        Py_RETURN_NONE;
    for (int k = 0; k < 3; k++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(lines, k)))
            Py_RETURN_NONE;
    int add_xff = PyObject_IsTrue(args[5]);
    if (add_xff < 0)
        return NULL;
    Py_ssize_t nf = PyList_GET_SIZE(raw);
    if (nf > UH_MAX_FIELDS)
        Py_RETURN_NONE;
    /* per field: 1 kept, 0 dropped; the kept fields' lower-cased names (for Connection) */
    char kept[UH_MAX_FIELDS];
    PyObject *lnames[UH_MAX_FIELDS];
    PyObject *items[UH_MAX_FIELDS]; /* the pairs, held while we work */
    Py_ssize_t nlnames = 0, nitems = 0, nconn = 0, nxff = 0, size = 0;
    Py_ssize_t conn_at[UH_MAX_FIELDS], xff_at[UH_MAX_FIELDS];
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *pair = PyList_GET_ITEM(raw, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            result = Py_NewRef(Py_None);
            goto out;
        }
        items[nitems++] = Py_NewRef(pair);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        PyObject *lname = lower(name);
        if (lname == NULL)
            goto out;
        int dropped = PySet_Contains(drop, lname);
        if (dropped < 0) {
            Py_DECREF(lname);
            goto out;
        }
        kept[i] = !dropped;
        if (dropped) {
            const char *ln = PyBytes_AS_STRING(lname);
            Py_ssize_t lnn = PyBytes_GET_SIZE(lname);
            if (EQ(ln, lnn, "connection"))
                conn_at[nconn++] = i;
            else if (add_xff && EQ(ln, lnn, "x-forwarded-for"))
                xff_at[nxff++] = i;
            Py_DECREF(lname);
            lnames[i] = NULL;
        }
        else {
            lnames[i] = lname;
            nlnames = i + 1;
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4;
        }
    }
    /* the Connection tokens (lower-cased, OWS stripped, as split_tokens) */
    const char *tok[UH_MAX_TOKENS];
    Py_ssize_t tokn[UH_MAX_TOKENS];
    char *tokbuf = NULL;
    int ntok = 0;
    if (nconn) {
        Py_ssize_t total = 0;
        for (Py_ssize_t c = 0; c < nconn; c++)
            total += PyBytes_GET_SIZE(PyTuple_GET_ITEM(items[conn_at[c]], 1));
        tokbuf = PyMem_Malloc(total + 1);
        if (tokbuf == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        char *w = tokbuf;
        for (Py_ssize_t c = 0; c < nconn; c++) {
            PyObject *v = PyTuple_GET_ITEM(items[conn_at[c]], 1);
            const char *vs = PyBytes_AS_STRING(v);
            Py_ssize_t vn = PyBytes_GET_SIZE(v), a = 0;
            for (;;) { /* one element per ",", empty ones included */
                Py_ssize_t b = a;
                while (b < vn && vs[b] != ',')
                    b++;
                Py_ssize_t x = a, y = b;
                while (x < y && (vs[x] == ' ' || vs[x] == '\t'))
                    x++;
                while (y > x && (vs[y - 1] == ' ' || vs[y - 1] == '\t'))
                    y--;
                if (ntok == UH_MAX_TOKENS) {
                    result = Py_NewRef(Py_None);
                    PyMem_Free(tokbuf);
                    goto out;
                }
                tok[ntok] = w;
                tokn[ntok++] = y - x;
                for (Py_ssize_t k = x; k < y; k++)
                    *w++ = (vs[k] >= 'A' && vs[k] <= 'Z') ? (char)(vs[k] + 32) : vs[k];
                if (b >= vn)
                    break;
                a = b + 1;
            }
        }
        /* a kept field named by a token is hop-by-hop too (its name up to any ":") */
        for (Py_ssize_t i = 0; i < nlnames; i++) {
            if (!kept[i])
                continue;
            const char *ln = PyBytes_AS_STRING(lnames[i]);
            Py_ssize_t lnn = PyBytes_GET_SIZE(lnames[i]);
            const char *colon = memchr(ln, ':', lnn);
            if (colon != NULL)
                lnn = colon - ln;
            for (int t = 0; t < ntok; t++) {
                if (tokn[t] == lnn && memcmp(tok[t], ln, lnn) == 0) {
                    kept[i] = 0;
                    PyObject *pair = items[i];
                    size -= PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) +
                            PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 4;
                    break;
                }
            }
        }
        PyMem_Free(tokbuf);
    }
    /* the sizes of the rest */
    Py_ssize_t mlen;
    const char *m = PyUnicode_AsUTF8AndSize(method, &mlen);
    if (m == NULL)
        goto out;
    PyObject *addr = PyTuple_GET_ITEM(lines, 0);
    PyObject *after = PyTuple_GET_ITEM(lines, nxff ? 2 : 1);
    size += mlen + 1 + PyBytes_GET_SIZE(target) + 11 + PyBytes_GET_SIZE(fixed) +
            PyBytes_GET_SIZE(after) + PyBytes_GET_SIZE(tail);
    if (nxff) { /* "X-Forwarded-For: " the client's values ", " ... the address "\r\n" */
        size += 17 + PyBytes_GET_SIZE(addr) + 2;
        for (Py_ssize_t x = 0; x < nxff; x++)
            size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(items[xff_at[x]], 1)) + 2;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        goto out;
    char *d = PyBytes_AS_STRING(result);
#define PUT(src, n)              \
    do {                         \
        memcpy(d, (src), (n));   \
        d += (n);                \
    } while (0)
#define PUTB(obj) PUT(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    PUT(m, mlen);
    *d++ = ' ';
    PUTB(target);
    PUT(" HTTP/1.1\r\n", 11);
    PUTB(fixed);
    for (Py_ssize_t i = 0; i < nf; i++) {
        if (!kept[i])
            continue;
        PUTB(PyTuple_GET_ITEM(items[i], 0));
        PUT(": ", 2);
        PUTB(PyTuple_GET_ITEM(items[i], 1));
        PUT("\r\n", 2);
    }
    if (nxff) {
        PUT("X-Forwarded-For: ", 17);
        for (Py_ssize_t x = 0; x < nxff; x++) {
            PUTB(PyTuple_GET_ITEM(items[xff_at[x]], 1));
            PUT(", ", 2);
        }
        PUTB(addr);
        PUT("\r\n", 2);
    }
    PUTB(after);
    PUTB(tail);
#undef PUTB
#undef PUT
    assert(d == PyBytes_AS_STRING(result) + size);
out:
    for (Py_ssize_t i = 0; i < nlnames; i++)
        Py_XDECREF(lnames[i]);
    for (Py_ssize_t i = 0; i < nitems; i++)
        Py_DECREF(items[i]);
    return result;
}

/* ------------------------------------------------------------------- fast_response_head */

static int exact_ll(PyObject *v, long long *out);

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

static PyObject *count_request(PyObject *, PyObject *const *, Py_ssize_t);

static PyMethodDef module_methods[] = {
    {"count_request", (PyCFunction)(void (*)(void))count_request, METH_FASTCALL,
     "count_request(nums, bounds, layout, status, received, sent, seconds): one request "
     "counted into its location's array, True; or False (nothing counted)"},
    {"configure", configure, METH_VARARGS,
     "configure(RequestHead, methods, refused, good_hosts): what fast_head needs"},
    {"fast_response_head", (PyCFunction)(void (*)(void))fast_response_head, METH_FASTCALL,
     "fast_response_head(status, length, keep_alive, header_lines, fields, content_type_line, "
     "status_lines, date_line, keep_line, close_line): the common response head, or None"},
    {"parse_response_head", (PyCFunction)(void (*)(void))parse_response_head, METH_FASTCALL,
     "parse_response_head(data, fields, head_only): (status, keep_alive, body, length) of the "
     "common upstream response whole in data, its fields added to fields; or None"},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, fields, drop_underscores, max_headers, max_hsize, max_url): the head of "
     "the common request that is the whole of data, parsed without llhttp; or None"},
    {"upstream_head", (PyCFunction)(void (*)(void))upstream_head, METH_FASTCALL,
     "upstream_head(method, target, fixed, raw, drop, add_xff, lines, tail): the proxy's "
     "upstream request head, or None"},
    {"fast_head", (PyCFunction)(void (*)(void))fast_head, METH_FASTCALL,
     "fast_head(parser, fields, url, data, drop_underscores, max_headers, max_hsize): the "
     "common request head, or None"},
    {NULL},
};

/* ---------------------------------------------------------------------------- WindowLimit */

/* The access handler of a declarative limit on a shared dict keyed by $binary_remote_addr
 * (edgeworker/lib/limit/declarative.py, make_access): the same steps as its Python closure for
 * an allowed request, and the closure's own functions for everything else. */
typedef struct {
    PyObject_HEAD
    PyObject *resolve;  /* () -> the shared dict's incr (resolved in the worker, then kept) */
    PyObject *incr;     /* or NULL until resolved */
    PyObject *time;     /* time.time */
    PyObject *prefix;   /* bytes: the key prefix */
    PyObject *parts;    /* (p0, p1, p2): block = p0 + remaining + p1 + reset + p2 + remaining */
    PyObject *errors;   /* the store's exception classes (a tuple) */
    PyObject *failed;   /* failed(req, exc): the store failed */
    PyObject *finish;   /* finish(req, k, count, left): every case but a plain allowed one */
    PyObject *slow;     /* slow(req): the whole Python closure (a key that is not bytes) */
    long long quota;
    double window;
} WindowLimit;

static PyObject *n_conn, *n_bin_addr, *n_binary_remote_addr, *n_resp_headers, *n_lines,
    *n_add_lines, *one, *zero;

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

/* name (a keyword argument's) is `want` (an interned str) */
static int
kw_is(PyObject *name, PyObject *want)
{
    return name == want || (PyUnicode_Check(name) && PyUnicode_Compare(name, want) == 0);
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

static int
wl_init(WindowLimit *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"resolve", "time", "prefix", "quota", "window", "parts", "errors",
                             "failed", "finish", "slow", NULL};
    PyObject *resolve, *time_, *prefix, *parts, *errors, *failed, *finish, *slow;
    long long quota;
    double window;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!LdO!O!OOO:WindowLimit", kwlist, &resolve,
                                     &time_, &PyBytes_Type, &prefix, &quota, &window,
                                     &PyTuple_Type, &parts, &PyTuple_Type, &errors, &failed,
                                     &finish, &slow))
        return -1;
    if (PyTuple_GET_SIZE(parts) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(parts, 0)) ||
        !PyBytes_Check(PyTuple_GET_ITEM(parts, 1)) || !PyBytes_Check(PyTuple_GET_ITEM(parts, 2))) {
        PyErr_SetString(PyExc_TypeError, "parts must be a tuple of three bytes");
        return -1;
    }
    if (!(window > 0) || quota < 0) {
        PyErr_SetString(PyExc_ValueError, "window must be > 0 and quota >= 0");
        return -1;
    }
    Py_XSETREF(self->resolve, Py_NewRef(resolve));
    Py_CLEAR(self->incr);
    Py_XSETREF(self->time, Py_NewRef(time_));
    Py_XSETREF(self->prefix, Py_NewRef(prefix));
    Py_XSETREF(self->parts, Py_NewRef(parts));
    Py_XSETREF(self->errors, Py_NewRef(errors));
    Py_XSETREF(self->failed, Py_NewRef(failed));
    Py_XSETREF(self->finish, Py_NewRef(finish));
    Py_XSETREF(self->slow, Py_NewRef(slow));
    self->quota = quota;
    self->window = window;
    return 0;
}

/* the client's packed address (bytes), or NULL with no error set when it is not bytes */
static PyObject *
wl_key(PyObject *req)
{
    PyObject *conn = PyObject_GetAttr(req, n_conn);
    if (conn == NULL)
        return NULL;
    PyObject *key = PyObject_GetAttr(conn, n_bin_addr);
    if (key != NULL && !(PyBytes_CheckExact(key) && PyBytes_GET_SIZE(key) > 0)) {
        Py_DECREF(key);
        key = PyObject_GetAttr(conn, n_binary_remote_addr);
    }
    Py_DECREF(conn);
    if (key != NULL && !PyBytes_CheckExact(key))
        Py_CLEAR(key);
    return key;
}

static PyObject *
wl_call(WindowLimit *self, PyObject *args, PyObject *kwds)
{
    PyObject *req;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "WindowLimit takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "WindowLimit", 1, 1, &req))
        return NULL;
    PyObject *key = wl_key(req);
    if (key == NULL)
        return PyErr_Occurred() ? NULL : PyObject_CallOneArg(self->slow, req);
    if (self->incr == NULL) {
        PyObject *incr = PyObject_CallNoArgs(self->resolve);
        if (incr == NULL) {
            Py_DECREF(key);
            goto store_error;
        }
        self->incr = incr;
    }
    PyObject *t = PyObject_CallNoArgs(self->time);
    double now = t == NULL ? -1.0 : PyFloat_AsDouble(t);
    Py_XDECREF(t);
    if (now == -1.0 && PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    /* seconds to the window's end, > 0 (Python's float % for a positive divisor) */
    double mod = fmod(now, self->window);
    if (mod != 0 && (mod < 0) != (self->window < 0))
        mod += self->window;
    double left_s = self->window - mod;
    PyObject *k = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(self->prefix) +
                                                      PyBytes_GET_SIZE(key));
    if (k == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    memcpy(PyBytes_AS_STRING(k), PyBytes_AS_STRING(self->prefix), PyBytes_GET_SIZE(self->prefix));
    memcpy(PyBytes_AS_STRING(k) + PyBytes_GET_SIZE(self->prefix), PyBytes_AS_STRING(key),
           PyBytes_GET_SIZE(key));
    Py_DECREF(key);
    PyObject *left = PyFloat_FromDouble(left_s);
    if (left == NULL) {
        Py_DECREF(k);
        return NULL;
    }
    PyObject *call[4] = {k, one, zero, left};
    PyObject *count = PyObject_Vectorcall(self->incr, call, 4, NULL);
    if (count == NULL) {
        Py_DECREF(k);
        Py_DECREF(left);
        goto store_error;
    }
    long long c;
    if (!exact_ll(count, &c) || c > self->quota) {
        /* a rejection, or a value this code does not expect: the Python code goes on */
        PyObject *fargs[4] = {req, k, count, left};
        PyObject *r = PyObject_Vectorcall(self->finish, fargs, 4, NULL);
        Py_DECREF(k);
        Py_DECREF(count);
        Py_DECREF(left);
        return r;
    }
    Py_DECREF(k);
    Py_DECREF(count);
    Py_DECREF(left);
    long long remaining = c < self->quota ? self->quota - c : 0;
    long long reset = (long long)ceil(left_s);
    char rem[24], rst[24];
    int rn = decimal(rem, remaining);
    int sn = decimal(rst, reset);
    PyObject *p0 = PyTuple_GET_ITEM(self->parts, 0), *p1 = PyTuple_GET_ITEM(self->parts, 1),
             *p2 = PyTuple_GET_ITEM(self->parts, 2);
    Py_ssize_t n0 = PyBytes_GET_SIZE(p0), n1 = PyBytes_GET_SIZE(p1), n2 = PyBytes_GET_SIZE(p2);
    PyObject *block = PyBytes_FromStringAndSize(NULL, n0 + rn + n1 + sn + n2 + rn);
    if (block == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(block);
    memcpy(d, PyBytes_AS_STRING(p0), n0);
    d += n0;
    memcpy(d, rem, rn);
    d += rn;
    memcpy(d, PyBytes_AS_STRING(p1), n1);
    d += n1;
    memcpy(d, rst, sn);
    d += sn;
    memcpy(d, PyBytes_AS_STRING(p2), n2);
    d += n2;
    memcpy(d, rem, rn);
    /* req.header_lines += block, or req.add_header_lines(block) once a handler holds
     * resp_headers */
    PyObject *rh = PyObject_GetAttr(req, n_resp_headers);
    if (rh == NULL) {
        Py_DECREF(block);
        return NULL;
    }
    int plain = rh == Py_None;
    Py_DECREF(rh);
    if (!plain) {
        PyObject *r = PyObject_CallMethodOneArg(req, n_add_lines, block);
        Py_DECREF(block);
        return r;
    }
    PyObject *lines = PyObject_GetAttr(req, n_lines);
    if (lines == NULL) {
        Py_DECREF(block);
        return NULL;
    }
    PyObject *joined = PyNumber_Add(lines, block);
    Py_DECREF(lines);
    Py_DECREF(block);
    if (joined == NULL)
        return NULL;
    int rc = PyObject_SetAttr(req, n_lines, joined);
    Py_DECREF(joined);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;

store_error:
    if (!PyErr_ExceptionMatches(self->errors))
        return NULL;
    {
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL)
            PyException_SetTraceback(exc, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        PyObject *fargs[2] = {req, exc};
        PyObject *r = PyObject_Vectorcall(self->failed, fargs, 2, NULL);
        Py_XDECREF(exc);
        return r;
    }
}

static int
wl_traverse(WindowLimit *self, visitproc visit, void *arg)
{
    Py_VISIT(self->resolve);
    Py_VISIT(self->incr);
    Py_VISIT(self->time);
    Py_VISIT(self->errors);
    Py_VISIT(self->failed);
    Py_VISIT(self->finish);
    Py_VISIT(self->slow);
    return 0;
}

static int
wl_clear(WindowLimit *self)
{
    Py_CLEAR(self->resolve);
    Py_CLEAR(self->incr);
    Py_CLEAR(self->time);
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->parts);
    Py_CLEAR(self->errors);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->finish);
    Py_CLEAR(self->slow);
    return 0;
}

static void
wl_dealloc(WindowLimit *self)
{
    PyObject_GC_UnTrack(self);
    wl_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject WindowLimitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeworker._speedups.WindowLimit",
    .tp_basicsize = sizeof(WindowLimit),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The access handler of a declarative shared-dict limit keyed by the client's "
              "packed address (see edgeworker/lib/limit/declarative.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)wl_init,
    .tp_call = (ternaryfunc)wl_call,
    .tp_dealloc = (destructor)wl_dealloc,
    .tp_traverse = (traverseproc)wl_traverse,
    .tp_clear = (inquiry)wl_clear,
};

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

/* --------------------------------------------------------------------------- UpstreamCounter */

/* UpstreamCounter(func, globals, layout) is edgeworker/status/metrics.py's upstream_event
 * (func, the Python function) for the common call: upstream_event(upstream, peer, status,
 * response_time, sent=.., received=..) in a worker whose counters (globals["_worker"].ups)
 * already hold that peer's slot [nums, codes]: the same increments (layout = (U_FAILS, U_SENT,
 * U_RECEIVED, U_TIME, U_TIMED), the indexes in nums). Every other call, or an odd value, goes
 * to func before anything is counted. */
typedef struct {
    PyObject_HEAD
    PyObject *func;
    PyObject *globals;
    Py_ssize_t fails, sent, received, time_i, timed, n;
    vectorcallfunc vectorcall;
} UpstreamCounter;

static PyObject *n_worker, *n_ups, *n_sent, *n_received;

static int
plain_number(PyObject *v)
{
    return PyLong_CheckExact(v) || PyFloat_CheckExact(v);
}

static PyObject *
uc_vectorcall(UpstreamCounter *u, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *status, *rt = Py_None, *sent = zero, *received = zero;
    PyObject *w, *ups = NULL, *key = NULL, *result = NULL;
    PyObject *nv[4] = {NULL, NULL, NULL, NULL}; /* the code's count, fails, time, timed */
    if (nargs < 3 || nargs > 4)
        goto python;
    status = args[2];
    if (nargs == 4)
        rt = args[3];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (kw_is(name, n_sent))
            sent = args[nargs + k];
        else if (kw_is(name, n_received))
            received = args[nargs + k];
        else
            goto python;
    }
    if ((status != Py_None && !PyLong_CheckExact(status)) ||
        (rt != Py_None && !plain_number(rt)) || !PyLong_CheckExact(sent) ||
        !PyLong_CheckExact(received))
        goto python;
    w = PyDict_GetItemWithError(u->globals, n_worker); /* borrowed */
    if (w == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto python;
    }
    if (w == Py_None)
        goto python;
    if ((ups = PyObject_GetAttr(w, n_ups)) == NULL)
        return NULL;
    if (!PyDict_CheckExact(ups))
        goto python;
    key = PyTuple_Pack(2, args[0], args[1]);
    if (key == NULL)
        goto done;
    PyObject *slot = PyDict_GetItemWithError(ups, key); /* borrowed; held through ups */
    if (slot == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto python; /* a new peer: the Python code makes its slot */
    }
    if (!PyList_CheckExact(slot) || PyList_GET_SIZE(slot) != 2)
        goto python;
    PyObject *nums = PyList_GET_ITEM(slot, 0), *codes = PyList_GET_ITEM(slot, 1);
    if (!PyList_CheckExact(nums) || PyList_GET_SIZE(nums) != u->n || !PyDict_CheckExact(codes))
        goto python;
    for (Py_ssize_t i = 0; i < u->n; i++)
        if (!plain_number(PyList_GET_ITEM(nums, i)))
            goto python;
    Py_INCREF(slot);
    Py_INCREF(nums);
    Py_INCREF(codes);
    /* the new values first, then the stores */
    int ok = 1;
    PyObject *old = NULL;
    if (status == Py_None) {
        nv[1] = PyNumber_Add(PyList_GET_ITEM(nums, u->fails), one);
        ok = nv[1] != NULL;
    } else {
        old = PyDict_GetItemWithError(codes, status);
        if (old == NULL && PyErr_Occurred())
            ok = 0;
        else
            ok = (nv[0] = old != NULL ? PyNumber_Add(old, one) : Py_NewRef(one)) != NULL;
    }
    if (ok && rt != Py_None)
        ok = (nv[2] = PyNumber_Add(PyList_GET_ITEM(nums, u->time_i), rt)) != NULL &&
             (nv[3] = PyNumber_Add(PyList_GET_ITEM(nums, u->timed), one)) != NULL;
    PyObject *ns = NULL, *nr = NULL;
    if (ok && PyObject_IsTrue(sent))
        ok = (ns = PyNumber_Add(PyList_GET_ITEM(nums, u->sent), sent)) != NULL;
    if (ok && PyObject_IsTrue(received))
        ok = (nr = PyNumber_Add(PyList_GET_ITEM(nums, u->received), received)) != NULL;
    if (ok && nv[0] != NULL)
        ok = PyDict_SetItem(codes, status, nv[0]) == 0;
    if (ok) {
        /* PyList_SetItem takes the references */
        if (nv[1] != NULL) {
            PyList_SetItem(nums, u->fails, nv[1]);
            nv[1] = NULL;
        }
        if (nv[2] != NULL) {
            PyList_SetItem(nums, u->time_i, nv[2]);
            PyList_SetItem(nums, u->timed, nv[3]);
            nv[2] = nv[3] = NULL;
        }
        if (ns != NULL) {
            PyList_SetItem(nums, u->sent, ns);
            ns = NULL;
        }
        if (nr != NULL) {
            PyList_SetItem(nums, u->received, nr);
            nr = NULL;
        }
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(ns);
    Py_XDECREF(nr);
    Py_DECREF(codes);
    Py_DECREF(nums);
    Py_DECREF(slot);
    goto done;
python:
    result = PyObject_Vectorcall(u->func, args, nargsf, kwnames);
done:
    Py_XDECREF(ups);
    Py_XDECREF(key);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(nv[i]);
    return result;
}

static PyObject *
uc_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *func, *globals;
    Py_ssize_t f, se, re, t, td;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "UpstreamCounter() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!(nnnnn):UpstreamCounter", &func, &PyDict_Type, &globals, &f,
                          &se, &re, &t, &td))
        return NULL;
    Py_ssize_t idx[5] = {f, se, re, t, td};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            if (idx[i] < 0 || idx[i] > 4 || (i != j && idx[i] == idx[j])) {
                PyErr_SetString(PyExc_ValueError, "UpstreamCounter: bad layout");
                return NULL;
            }
    if (!PyCallable_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "UpstreamCounter: func must be callable");
        return NULL;
    }
    UpstreamCounter *u = PyObject_GC_New(UpstreamCounter, type);
    if (u == NULL)
        return NULL;
    u->func = Py_NewRef(func);
    u->globals = Py_NewRef(globals);
    u->fails = f;
    u->sent = se;
    u->received = re;
    u->time_i = t;
    u->timed = td;
    u->n = 5;
    u->vectorcall = (vectorcallfunc)uc_vectorcall;
    PyObject_GC_Track(u);
    return (PyObject *)u;
}

static int
uc_traverse(UpstreamCounter *u, visitproc visit, void *arg)
{
    Py_VISIT(u->func);
    Py_VISIT(u->globals);
    return 0;
}

static int
uc_clear(UpstreamCounter *u)
{
    Py_CLEAR(u->func);
    Py_CLEAR(u->globals);
    return 0;
}

static void
uc_dealloc(UpstreamCounter *u)
{
    PyObject_GC_UnTrack(u);
    uc_clear(u);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

static PyObject *
uc_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    return Py_NewRef(self); /* like a builtin function: not bound as a method */
}

static PyMemberDef uc_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(UpstreamCounter, func), READONLY,
     "the Python upstream_event (every call the C path does not serve)"},
    {NULL},
};

static PyTypeObject UpstreamCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeworker._speedups.UpstreamCounter",
    .tp_basicsize = sizeof(UpstreamCounter),
    .tp_dealloc = (destructor)uc_dealloc,
    .tp_vectorcall_offset = offsetof(UpstreamCounter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "UpstreamCounter(func, globals, layout): upstream_event's common call in C.",
    .tp_traverse = (traverseproc)uc_traverse,
    .tp_clear = (inquiry)uc_clear,
    .tp_descr_get = uc_descr_get,
    .tp_members = uc_members,
    .tp_new = uc_new,
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
    if (PyType_Ready(&RequestFieldsType) < 0 || PyType_Ready(&ResponseFieldsType) < 0 ||
        PyType_Ready(&WindowLimitType) < 0 ||
        PyType_Ready(&UpstreamCounterType) < 0)
        return NULL;
    s_dup_cl = PyUnicode_FromString("duplicate Content-Length");
    s_bad_cl = PyUnicode_FromString("invalid Content-Length");
    if (s_dup_cl == NULL || s_bad_cl == NULL)
        return NULL;
    s_version = PyUnicode_InternFromString("1.1");
    s_empty_bytes = PyBytes_FromStringAndSize("", 0);
    s_get_method = PyUnicode_InternFromString("get_method");
    if (s_version == NULL || s_empty_bytes == NULL || s_get_method == NULL)
        return NULL;
#define NAME(v, text) if ((v = PyUnicode_InternFromString(text)) == NULL) return NULL
    NAME(n_method, "method");
    NAME(n_target, "target");
    NAME(n_path, "path");
    NAME(n_query, "query");
    NAME(n_version, "version");
    NAME(n_headers, "headers");
    NAME(n_keep_alive, "keep_alive");
    NAME(n_content_length, "content_length");
    NAME(n_chunked, "chunked");
    NAME(n_expect_continue, "expect_continue");
    NAME(n_upgrade, "upgrade");
    NAME(n_host, "host");
    NAME(n_request_id, "request_id");
    NAME(n_size, "size");
    NAME(n_conn, "_conn");
    NAME(n_bin_addr, "bin_addr");
    NAME(n_binary_remote_addr, "binary_remote_addr");
    NAME(n_resp_headers, "resp_fields");
    NAME(n_lines, "header_lines");
    NAME(n_add_lines, "add_header_lines");
    NAME(n_worker, "_worker");
    NAME(n_ups, "ups");
    NAME(n_sent, "sent");
    NAME(n_received, "received");
#undef NAME
    one = PyLong_FromLong(1);
    zero = PyLong_FromLong(0);
    if (one == NULL || zero == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RequestFields", (PyObject *)&RequestFieldsType) < 0 ||
        PyModule_AddObjectRef(m, "ResponseFields", (PyObject *)&ResponseFieldsType) < 0 ||
        PyModule_AddObjectRef(m, "WindowLimit", (PyObject *)&WindowLimitType) < 0 ||
        PyModule_AddObjectRef(m, "UpstreamCounter", (PyObject *)&UpstreamCounterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
