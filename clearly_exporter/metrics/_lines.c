/* Series lines written from a template's pieces and the values between them, as
 * `template % values` writes them: the render process's inner loop (see exposition.py).
 * `bytes %` makes a str object of each int, then copies it; here the digits go straight
 * into the body, and a histogram's cumulative counts are summed on the way. Built with
 * CLEARLY_EXPORTER_COMPILE=1; without it, exposition.py uses `%`. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* The longest a value written here can be: a 64-bit int's digits and sign (20), or a
 * float's shortest repr (24, as -1.2345678901234567e-308). */
#define NUMBER_MAX 32

/* The digits of `n`, written ending at `end`; returns where they start. */
static char *
write_digits(char *end, long long n)
{
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0) {
        *--end = '-';
    }
    return end;
}

/* How many bytes `value` may take: exact for bytes and str, an upper bound for numbers;
 * -1 with an exception set for anything else. A str is written as it is: exposition.py
 * passes only `Verbatim` text (what `%a` writes of it). */
static Py_ssize_t
value_size(PyObject *value)
{
    if (PyLong_CheckExact(value) || PyFloat_CheckExact(value)) {
        return NUMBER_MAX;
    }
    if (PyBytes_Check(value)) {
        return PyBytes_GET_SIZE(value);
    }
    if (PyUnicode_Check(value) && PyUnicode_IS_ASCII(value)) {
        return PyUnicode_GET_LENGTH(value);
    }
    PyErr_Format(PyExc_TypeError, "cannot fill in a %.100s", Py_TYPE(value)->tp_name);
    return -1;
}

/* Write `value` at `out`; returns the end, or NULL with an exception set. */
static char *
write_value(char *out, PyObject *value)
{
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "an int beyond 64 bits");
            return NULL;
        }
        char digits[NUMBER_MAX];
        char *start = write_digits(digits + NUMBER_MAX, n);
        size_t size = (size_t)(digits + NUMBER_MAX - start);
        memcpy(out, start, size);
        return out + size;
    }
    if (PyFloat_CheckExact(value)) {
        /* As repr() writes it, which is what `%a` writes. */
        char *text = PyOS_double_to_string(
            PyFloat_AS_DOUBLE(value), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL) {
            return NULL;
        }
        size_t size = strlen(text);
        if (size > NUMBER_MAX) {
            PyMem_Free(text);
            PyErr_SetString(PyExc_ValueError, "a float's repr longer than expected");
            return NULL;
        }
        memcpy(out, text, size);
        PyMem_Free(text);
        return out + size;
    }
    if (PyBytes_Check(value)) {
        memcpy(out, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        return out + PyBytes_GET_SIZE(value);
    }
    /* An ASCII str (value_size checked). */
    memcpy(out, PyUnicode_DATA(value), (size_t)PyUnicode_GET_LENGTH(value));
    return out + PyUnicode_GET_LENGTH(value);
}

/* One thing to write between two pieces: a count, or an object (see write_value). */
typedef struct {
    long long count;
    PyObject *object; /* NULL for a count */
} Item;

/* The most items a call writes: a histogram of 126 buckets with exemplars. */
#define ITEMS_MAX 256

/* The pieces with the items between them, as one bytes; NULL with an exception set. */
static PyObject *
join(PyObject *pieces, const Item *items, Py_ssize_t count)
{
    if (!PyTuple_Check(pieces) || PyTuple_GET_SIZE(pieces) != count + 1) {
        PyErr_Format(PyExc_ValueError, "the pieces must be a tuple of %zd bytes", count + 1);
        return NULL;
    }
    Py_ssize_t bound = 0;
    for (Py_ssize_t i = 0; i <= count; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        if (!PyBytes_Check(piece)) {
            PyErr_SetString(PyExc_TypeError, "the pieces must be bytes");
            return NULL;
        }
        bound += PyBytes_GET_SIZE(piece);
        if (i < count) {
            Py_ssize_t size = items[i].object ? value_size(items[i].object) : NUMBER_MAX;
            if (size < 0) {
                return NULL;
            }
            bound += size;
        }
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, bound);
    if (body == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(body);
    for (Py_ssize_t i = 0; i <= count; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        memcpy(out, PyBytes_AS_STRING(piece), (size_t)PyBytes_GET_SIZE(piece));
        out += PyBytes_GET_SIZE(piece);
        if (i == count) {
            break;
        }
        if (items[i].object == NULL) {
            char digits[NUMBER_MAX];
            char *start = write_digits(digits + NUMBER_MAX, items[i].count);
            memcpy(out, start, (size_t)(digits + NUMBER_MAX - start));
            out += digits + NUMBER_MAX - start;
        }
        else if ((out = write_value(out, items[i].object)) == NULL) {
            Py_DECREF(body);
            return NULL;
        }
    }
    Py_ssize_t size = out - PyBytes_AS_STRING(body);
    if (_PyBytes_Resize(&body, size) < 0) {
        return NULL;
    }
    return body;
}

/* fill(pieces, values) -> bytes: pieces[0] + values[0] + pieces[1] + ... + pieces[-1]. */
static PyObject *
fill(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fill(pieces, values)");
        return NULL;
    }
    PyObject *values = PySequence_Fast(args[1], "fill's values must be a sequence");
    if (values == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(values);
    Item *items = PyMem_Malloc(sizeof(Item) * (size_t)(count ? count : 1));
    PyObject *body = NULL;
    if (items == NULL) {
        PyErr_NoMemory();
    }
    else {
        PyObject **objects = PySequence_Fast_ITEMS(values);
        for (Py_ssize_t i = 0; i < count; i++) {
            items[i].object = objects[i];
        }
        body = join(args[0], items, count);
        PyMem_Free(items);
    }
    Py_DECREF(values);
    return body;
}

/* histogram(pieces, counts, total, texts) -> bytes: a histogram series' lines. Its
 * cumulative bucket counts, each followed by its exemplar's text unless `texts` is None,
 * then the count, then `total`, between the pieces. */
static PyObject *
histogram(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "histogram(pieces, counts, total, texts)");
        return NULL;
    }
    PyObject *counts = PySequence_Fast(args[1], "a histogram's counts must be a sequence");
    if (counts == NULL) {
        return NULL;
    }
    PyObject *texts = NULL, *body = NULL;
    Py_ssize_t buckets = PySequence_Fast_GET_SIZE(counts);
    int shown = args[3] != Py_None;
    if (shown) {
        texts = PySequence_Fast(args[3], "exemplar texts must be a sequence");
        if (texts == NULL) {
            goto done;
        }
        if (PySequence_Fast_GET_SIZE(texts) != buckets) {
            PyErr_SetString(PyExc_ValueError, "an exemplar text per bucket");
            goto done;
        }
    }
    if (buckets * (shown ? 2 : 1) + 2 > ITEMS_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many buckets");
        goto done;
    }
    Item items[ITEMS_MAX];
    Py_ssize_t n = 0;
    long long total = 0;
    for (Py_ssize_t i = 0; i < buckets; i++) {
        int overflow;
        long long count = PyLong_AsLongLongAndOverflow(PySequence_Fast_GET_ITEM(counts, i),
                                                       &overflow);
        if (overflow || (count == -1 && PyErr_Occurred())
            || __builtin_add_overflow(total, count, &total)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_OverflowError, "a count beyond 64 bits");
            }
            goto done;
        }
        items[n++] = (Item){total, NULL};
        if (shown) {
            items[n++] = (Item){0, PySequence_Fast_GET_ITEM(texts, i)};
        }
    }
    items[n++] = (Item){total, NULL};
    items[n++] = (Item){0, args[2]};
    body = join(args[0], items, n);
done:
    Py_DECREF(counts);
    Py_XDECREF(texts);
    return body;
}

/* rows(pieces, parts, now, before, width, buckets, sum_text) -> int: the lines of each
 * histogram row of `now` (bytes: rows of `width` 8-byte cells, `buckets` counts then the
 * sum) that differs from the same row of `before` (all of them if None), written as
 * `histogram` writes them (no exemplars) into `parts` at the row's place; the rows
 * written. The sum goes as a float where |sum| < 1e6, else as what `sum_text(sum)`
 * gives. A row of a block unchanged costs a memcmp, not a Python call. */
static PyObject *
rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "rows(pieces, parts, now, before, width, buckets, sum_text)");
        return NULL;
    }
    PyObject *pieces = args[0], *parts = args[1], *now = args[2], *before = args[3];
    PyObject *sum_text = args[6];
    if (!PyList_Check(pieces) || !PyList_Check(parts) || !PyBytes_Check(now)
        || (before != Py_None && !PyBytes_Check(before))) {
        PyErr_SetString(PyExc_TypeError, "rows takes lists of pieces and parts, and bytes");
        return NULL;
    }
    Py_ssize_t width = PyLong_AsSsize_t(args[4]);
    if (width == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t buckets = PyLong_AsSsize_t(args[5]);
    if (buckets == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(pieces);
    Py_ssize_t span = width * 8;
    if (buckets < 1 || buckets + 1 > width || buckets + 2 > ITEMS_MAX
        || PyList_GET_SIZE(parts) != n || PyBytes_GET_SIZE(now) != n * span
        || (before != Py_None && PyBytes_GET_SIZE(before) != n * span)) {
        PyErr_SetString(PyExc_ValueError, "rows: the sizes do not agree");
        return NULL;
    }
    const char *cur = PyBytes_AS_STRING(now);
    const char *old = before == Py_None ? NULL : PyBytes_AS_STRING(before);
    Py_ssize_t written = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *row = cur + i * span;
        if (old != NULL && memcmp(row, old + i * span, (size_t)span) == 0) {
            continue;
        }
        Item items[ITEMS_MAX];
        long long total = 0;
        for (Py_ssize_t b = 0; b < buckets; b++) {
            long long count;
            memcpy(&count, row + b * 8, sizeof count);
            if (__builtin_add_overflow(total, count, &total)) {
                PyErr_SetString(PyExc_OverflowError, "a count beyond 64 bits");
                return NULL;
            }
            items[b] = (Item){total, NULL};
        }
        items[buckets] = (Item){total, NULL};
        double sum;
        memcpy(&sum, row + buckets * 8, sizeof sum);
        PyObject *value = PyFloat_FromDouble(sum);
        if (value != NULL && !(fabs(sum) < 1e6)) {
            Py_SETREF(value, PyObject_CallOneArg(sum_text, value));
        }
        if (value == NULL) {
            return NULL;
        }
        items[buckets + 1] = (Item){0, value};
        if (PyList_GET_SIZE(pieces) != n || PyList_GET_SIZE(parts) != n) {
            Py_DECREF(value);
            PyErr_SetString(PyExc_RuntimeError, "rows: the lists changed under it");
            return NULL;
        }
        PyObject *body = join(PyList_GET_ITEM(pieces, i), items, buckets + 2);
        Py_DECREF(value);
        if (body == NULL || PyList_SetItem(parts, i, body) < 0) {
            return NULL;
        }
        written++;
    }
    return PyLong_FromSsize_t(written);
}

static PyMethodDef methods[] = {
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(pieces, values) -> bytes: the pieces with each value between two, as `%` "
     "writes ints (%d), floats (%a), bytes and ASCII str (%s)."},
    {"histogram", (PyCFunction)(void (*)(void))histogram, METH_FASTCALL,
     "histogram(pieces, counts, total, texts) -> bytes: a histogram series' lines."},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(pieces, parts, now, before, width, buckets, sum_text) -> int: the lines of "
     "the histogram rows that changed, into parts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lines", NULL, 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__lines(void)
{
    return PyModule_Create(&module);
}
