/* Series lines written from a template's pieces and the values between them, as
 * `template % values` writes them: the render process's inner loop (see exposition.py
 * and rows.py). `bytes %` makes a str object of each int, then copies it; here the
 * digits go straight into the body, read from a slab's cells where they live there,
 * and a histogram's cumulative counts are summed on the way. Built with
 * CLEARLY_EXPORTER_COMPILE=1; without it, exposition.py and rows.py use `%`. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* The longest a value written here can be: a 64-bit int's digits and sign (20), or a
 * float's shortest repr (24, as -1.2345678901234567e-308). */
#define NUMBER_MAX 32

/* The digits of `n` (and its sign), written at `out`; returns their end. */
static char *
write_count(char *out, long long n)
{
    char digits[NUMBER_MAX], *end = digits + NUMBER_MAX, *start = end;
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        *--start = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0) {
        *--start = '-';
    }
    memcpy(out, start, (size_t)(end - start));
    return out + (end - start);
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
        return write_count(out, n);
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

/* The most items a row takes: a histogram of 127 buckets with exemplars. */
#define ITEMS_MAX 256

/* The most bytes the pieces with the items between them take; -1 with an exception set
 * where the pieces are not a tuple of `count + 1` bytes or an item cannot be written. */
static Py_ssize_t
joined_size(PyObject *pieces, const Item *items, Py_ssize_t count)
{
    if (!PyTuple_Check(pieces) || PyTuple_GET_SIZE(pieces) != count + 1) {
        PyErr_Format(PyExc_ValueError, "the pieces must be a tuple of %zd bytes", count + 1);
        return -1;
    }
    Py_ssize_t bound = 0;
    for (Py_ssize_t i = 0; i <= count; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        if (!PyBytes_Check(piece)) {
            PyErr_SetString(PyExc_TypeError, "the pieces must be bytes");
            return -1;
        }
        bound += PyBytes_GET_SIZE(piece);
        if (i < count) {
            Py_ssize_t size = items[i].object ? value_size(items[i].object) : NUMBER_MAX;
            if (size < 0) {
                return -1;
            }
            bound += size;
        }
    }
    return bound;
}

/* Write the pieces (checked by joined_size) with the items between them at `out`;
 * returns the end, or NULL with an exception set. */
static char *
write_joined(char *out, PyObject *pieces, const Item *items, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i <= count; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        memcpy(out, PyBytes_AS_STRING(piece), (size_t)PyBytes_GET_SIZE(piece));
        out += PyBytes_GET_SIZE(piece);
        if (i == count) {
            break;
        }
        if (items[i].object == NULL) {
            out = write_count(out, items[i].count);
        }
        else if ((out = write_value(out, items[i].object)) == NULL) {
            return NULL;
        }
    }
    return out;
}

/* `body` cut to the `size` bytes written; NULL (body released) with an exception set. */
static PyObject *
trimmed(PyObject *body, Py_ssize_t size)
{
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
        goto done;
    }
    PyObject **objects = PySequence_Fast_ITEMS(values);
    for (Py_ssize_t i = 0; i < count; i++) {
        items[i].object = objects[i];
    }
    Py_ssize_t bound = joined_size(args[0], items, count);
    if (bound >= 0 && (body = PyBytes_FromStringAndSize(NULL, bound)) != NULL) {
        char *end = write_joined(PyBytes_AS_STRING(body), args[0], items, count);
        if (end == NULL) {
            Py_CLEAR(body);
        }
        else {
            body = trimmed(body, end - PyBytes_AS_STRING(body));
        }
    }
    PyMem_Free(items);
done:
    Py_DECREF(values);
    return body;
}

/* The bytes a bytes object (or None) holds, and how many; -1 with an exception set if
 * it is neither. */
static Py_ssize_t
bytes_of(PyObject *value, const char **data, const char *what)
{
    if (value == Py_None) {
        *data = NULL;
        return 0;
    }
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes or None", what);
        return -1;
    }
    *data = PyBytes_AS_STRING(value);
    return PyBytes_GET_SIZE(value);
}

/* A histogram row's items, from its cells: the cumulative bucket counts (each followed by
 * its exemplar's text if `shown`: from the tuple `texts`, none where it is NULL), the count, and
 * the sum (a new reference in `*sum`, which the caller releases). 0, or -1 with an
 * exception set. */
static int
row_items(Item *items, const char *row, Py_ssize_t buckets, int shown, PyObject *texts,
          PyObject *sum_text, PyObject **sum)
{
    static PyObject *none = NULL;  /* the text of no exemplar */
    if (shown && none == NULL && (none = PyBytes_FromStringAndSize(NULL, 0)) == NULL) {
        return -1;
    }
    Py_ssize_t n = 0;
    long long total = 0;
    for (Py_ssize_t b = 0; b < buckets; b++) {
        long long count;
        memcpy(&count, row + b * 8, sizeof count);
        if (__builtin_add_overflow(total, count, &total)) {
            PyErr_SetString(PyExc_OverflowError, "a count beyond 64 bits");
            return -1;
        }
        items[n++] = (Item){total, NULL};
        if (shown) {
            items[n++] = (Item){0, texts ? PyTuple_GET_ITEM(texts, b) : none};
        }
    }
    items[n++] = (Item){total, NULL};
    double value;
    memcpy(&value, row + buckets * 8, sizeof value);
    PyObject *object = PyFloat_FromDouble(value);
    if (object != NULL && !(fabs(value) < 1e6)) {
        Py_SETREF(object, PyObject_CallOneArg(sum_text, object));
    }
    if (object == NULL) {
        return -1;
    }
    Py_ssize_t size = value_size(object);
    if (size < 0 || size > NUMBER_MAX) {
        Py_DECREF(object);
        if (size >= 0) {
            PyErr_SetString(PyExc_ValueError, "a histogram sum's text longer than expected");
        }
        return -1;
    }
    items[n] = (Item){0, object};
    *sum = object;
    return 0;
}

/* A row written again: its pieces, and its exemplar texts (NULL: none); both held. */
typedef struct {
    PyObject *pieces;
    PyObject *texts;
} Row;

/* Row `i`'s exemplar texts from the dict `texts` (None if it has none), as a new tuple of
 * `buckets`: what the row is written with, whatever the dict holds meanwhile. NULL with
 * an exception set. */
static PyObject *
texts_of(PyObject *texts, Py_ssize_t i, Py_ssize_t buckets)
{
    PyObject *index = PyLong_FromSsize_t(i);
    if (index == NULL) {
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(texts, index);
    Py_DECREF(index);
    if (found == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(found);  /* the dict may lose it while the texts are read */
    PyObject *tuple = PySequence_Tuple(found);
    Py_DECREF(found);
    if (tuple != NULL && PyTuple_GET_SIZE(tuple) != buckets) {
        Py_CLEAR(tuple);
        PyErr_SetString(PyExc_ValueError, "an exemplar text per bucket");
    }
    return tuple;
}

/* block(pieces, body, ends, now, before, width, buckets, sum_text, texts)
 *     -> (body, ends)
 * A block of histogram series' lines, from the rows of `now` (bytes: rows of `width`
 * 8-byte cells, `buckets` counts then the sum) and the lines last rendered (`body`, each
 * row ending at the offset `ends` holds for it, 8-byte ints). A row is written again
 * where its cells differ from the same row of `before`, or it is in `texts`, or there is
 * no `body` or `before`; any other is copied from `body` (none written: `body` and `ends`
 * themselves). The sum goes as a float where
 * |sum| < 1e6, else as what `sum_text(sum)` gives. `texts`: None to show no exemplar,
 * or a dict of row index -> its buckets' exemplar texts, for templates that show them
 * (a row written again that is not in it shows none). */
static PyObject *
block(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "block(pieces, body, ends, now, before, width, buckets, sum_text, texts)");
        return NULL;
    }
    PyObject *sum_text = args[7], *texts = args[8];
    int shown = texts != Py_None;
    if (!PyList_Check(args[0]) || !PyBytes_Check(args[3]) || (shown && !PyDict_Check(texts))) {
        PyErr_SetString(PyExc_TypeError, "block takes a list of pieces, bytes and a dict");
        return NULL;
    }
    const char *old = NULL, *old_ends = NULL, *before = NULL;
    Py_ssize_t old_size = bytes_of(args[1], &old, "body");
    Py_ssize_t ends_size = bytes_of(args[2], &old_ends, "ends");
    Py_ssize_t before_size = bytes_of(args[4], &before, "before");
    if (old_size < 0 || ends_size < 0 || before_size < 0) {
        return NULL;
    }
    Py_ssize_t width = PyLong_AsSsize_t(args[5]);
    if (width == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t buckets = PyLong_AsSsize_t(args[6]);
    if (buckets == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* A row's cells: its buckets and sum, and no more than a row's items. */
    if (buckets < 1 || buckets > ITEMS_MAX || buckets + 1 > width || width > ITEMS_MAX) {
        PyErr_SetString(PyExc_ValueError, "block: the sizes do not agree");
        return NULL;
    }
    /* The list as it is now: texts_of may run Python code that changes it. */
    PyObject *pieces = PyList_AsTuple(args[0]);
    if (pieces == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(pieces), span = width * 8, cells_size;
    Py_ssize_t count = buckets * (shown ? 2 : 1) + 2;
    int kept = old != NULL && before != NULL;
    if (count > ITEMS_MAX || __builtin_mul_overflow(n, span, &cells_size)
        || PyBytes_GET_SIZE(args[3]) != cells_size
        || (before != NULL && before_size != cells_size)
        || (old != NULL && (old_ends == NULL || ends_size / 8 != n || ends_size % 8))) {
        Py_DECREF(pieces);
        PyErr_SetString(PyExc_ValueError, "block: the sizes do not agree");
        return NULL;
    }
    const char *cells = PyBytes_AS_STRING(args[3]);
    Row *rows = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Row));
    if (rows == NULL) {
        Py_DECREF(pieces);
        return PyErr_NoMemory();
    }
    /* First which rows are written again, and the most the body takes. */
    PyObject *body = NULL, *ends = NULL, *result = NULL;
    Py_ssize_t bound = 0, start = 0, redone = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long end = 0;
        if (old != NULL) {
            memcpy(&end, old_ends + i * 8, sizeof end);
            if (end < start || end > old_size) {
                PyErr_SetString(PyExc_ValueError, "block: ends out of order");
                goto done;
            }
        }
        int redo = !kept || memcmp(cells + i * span, before + i * span, (size_t)span) != 0;
        if (shown) {
            if ((rows[i].texts = texts_of(texts, i, buckets)) == NULL) {
                goto done;
            }
            if (rows[i].texts == Py_None) {
                Py_CLEAR(rows[i].texts);
            }
            redo = redo || rows[i].texts != NULL;
        }
        if (redo) {
            redone++;
            PyObject *row = rows[i].pieces = Py_NewRef(PyTuple_GET_ITEM(pieces, i));
            if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != count + 1) {
                PyErr_Format(PyExc_ValueError, "the pieces must be tuples of %zd bytes",
                             count + 1);
                goto done;
            }
            for (Py_ssize_t p = 0; p <= count; p++) {
                PyObject *piece = PyTuple_GET_ITEM(row, p);
                if (!PyBytes_Check(piece)) {
                    PyErr_SetString(PyExc_TypeError, "the pieces must be bytes");
                    goto done;
                }
                bound += PyBytes_GET_SIZE(piece) + NUMBER_MAX;
            }
            for (Py_ssize_t b = 0; rows[i].texts != NULL && b < buckets; b++) {
                Py_ssize_t size = value_size(PyTuple_GET_ITEM(rows[i].texts, b));
                if (size < 0) {
                    goto done;
                }
                bound += size;
            }
        }
        else {
            bound += (Py_ssize_t)end - start;
        }
        start = (Py_ssize_t)end;
    }
    if (!redone && old != NULL) {  /* the same lines: the same objects */
        result = PyTuple_Pack(2, args[1], args[2]);
        goto done;
    }
    body = PyBytes_FromStringAndSize(NULL, bound);
    ends = PyBytes_FromStringAndSize(NULL, n * 8);
    if (body == NULL || ends == NULL) {
        goto done;
    }
    /* Then each row, written or copied. */
    char *out = PyBytes_AS_STRING(body);
    start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long end = 0;
        if (old != NULL) {
            memcpy(&end, old_ends + i * 8, sizeof end);
        }
        if (rows[i].pieces != NULL) {
            Item items[ITEMS_MAX];
            PyObject *sum;
            if (row_items(items, cells + i * span, buckets, shown, rows[i].texts, sum_text,
                          &sum) < 0) {
                goto done;
            }
            char *written = write_joined(out, rows[i].pieces, items, count);
            Py_DECREF(sum);
            if (written == NULL) {
                goto done;
            }
            out = written;
        }
        else {
            memcpy(out, old + start, (size_t)(end - start));
            out += end - start;
        }
        start = (Py_ssize_t)end;
        long long at = out - PyBytes_AS_STRING(body);
        memcpy(PyBytes_AS_STRING(ends) + i * 8, &at, sizeof at);
    }
    if ((body = trimmed(body, out - PyBytes_AS_STRING(body))) != NULL) {
        result = PyTuple_Pack(2, body, ends);
    }
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(rows[i].pieces);
        Py_XDECREF(rows[i].texts);
    }
    PyMem_Free(rows);
    Py_DECREF(pieces);
    Py_XDECREF(body);
    Py_XDECREF(ends);
    return result;
}

/* A column of cells written between the pieces: counts (8-byte ints), or ages from start
 * times (8-byte floats: `at - start`, 0 unless 0 < it < max_age) as `%.3f` writes
 * them. */
static PyObject *
column(PyObject *pieces, PyObject *cells, int ages, double at, double max_age)
{
    if (!PyTuple_Check(pieces) || !PyBytes_Check(cells)
        || PyTuple_GET_SIZE(pieces) != PyBytes_GET_SIZE(cells) / 8 + 1
        || PyBytes_GET_SIZE(cells) % 8) {
        PyErr_SetString(PyExc_ValueError, "a piece more than there are cells, and bytes");
        return NULL;
    }
    if (ages && !(max_age < 1e27)) {
        PyErr_SetString(PyExc_ValueError, "ages that long would not fit");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(cells) / 8, bound = n * NUMBER_MAX;
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        if (!PyBytes_Check(piece)) {
            PyErr_SetString(PyExc_TypeError, "the pieces must be bytes");
            return NULL;
        }
        bound += PyBytes_GET_SIZE(piece);
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, bound);
    if (body == NULL) {
        return NULL;
    }
    const char *cell = PyBytes_AS_STRING(cells);
    char *out = PyBytes_AS_STRING(body);
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        memcpy(out, PyBytes_AS_STRING(piece), (size_t)PyBytes_GET_SIZE(piece));
        out += PyBytes_GET_SIZE(piece);
        if (i == n) {
            break;
        }
        if (ages) {
            double start, age;
            memcpy(&start, cell + i * 8, sizeof start);
            age = at - start;
            char *text = PyOS_double_to_string(0.0 < age && age < max_age ? age : 0.0, 'f', 3,
                                               0, NULL);
            if (text == NULL) {
                Py_DECREF(body);
                return NULL;
            }
            size_t size = strlen(text);
            memcpy(out, text, size);
            PyMem_Free(text);
            out += size;
        }
        else {
            long long count;
            memcpy(&count, cell + i * 8, sizeof count);
            out = write_count(out, count);
        }
    }
    return trimmed(body, out - PyBytes_AS_STRING(body));
}

/* counts(pieces, cells) -> bytes: each cell (an 8-byte int) between two pieces. */
static PyObject *
counts(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "counts(pieces, cells)");
        return NULL;
    }
    return column(args[0], args[1], 0, 0.0, 0.0);
}

/* ages(pieces, cells, at, max_age) -> bytes: each cell (a start time) as its age. */
static PyObject *
ages(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "ages(pieces, cells, at, max_age)");
        return NULL;
    }
    double at = PyFloat_AsDouble(args[2]);
    if (at == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double max_age = PyFloat_AsDouble(args[3]);
    if (max_age == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    return column(args[0], args[1], 1, at, max_age);
}

static PyMethodDef methods[] = {
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(pieces, values) -> bytes: the pieces with each value between two, as `%` "
     "writes ints (%d), floats (%a), bytes and ASCII str (%s)."},
    {"block", (PyCFunction)(void (*)(void))block, METH_FASTCALL,
     "block(pieces, body, ends, now, before, width, buckets, sum_text, texts) -> "
     "(body, ends): a block of histogram series, the rows that changed written again."},
    {"counts", (PyCFunction)(void (*)(void))counts, METH_FASTCALL,
     "counts(pieces, cells) -> bytes: each count cell between two pieces."},
    {"ages", (PyCFunction)(void (*)(void))ages, METH_FASTCALL,
     "ages(pieces, cells, at, max_age) -> bytes: each start time's age, as %.3f."},
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
