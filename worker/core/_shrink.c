/* pHash's 32 x 32 Lanczos shrink in Pillow's 8-bit fixed-point arithmetic, bit for bit.
 *
 * Pillow computes each output pixel as a scalar dot product, one at a time; the same integer
 * sums, with the vertical pass running along whole rows so that the compiler vectorises it, take
 * about a quarter of the time. A C extension rather than a Numba loop: it loads with the
 * process, where Numba costs a short-lived process (a scan) about a second before the first call.
 * The rules it follows (coefficients, rounding, pass order) and the check that they still hold
 * for the installed Pillow are in shrink.py.
 *
 * No floating-point contraction (-ffp-contract=off): a fused multiply-add would round the
 * coefficients differently from Pillow's own build.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define SIDE 32
#define PRECISION_BITS 22
#define SUPPORT 3.0

/* Both passes are built for AVX2 and for the baseline, chosen when the module loads. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTORISED __attribute__((target_clones("avx2", "default")))
#else
#define VECTORISED
#endif

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) {
    if (!(-SUPPORT <= x && x < SUPPORT)) return 0.0;
    return sinc(x) * sinc(x / SUPPORT);
}

/* taps(size, extent) -> bytes: for each of the 32 outputs its first input and its count of
 * inputs (int32 pairs), then its fixed-point weights (int32, `width` per output, zero-padded).
 * `extent` is the span the content takes in the `size` inputs, held as float32 as Pillow holds
 * its box. */
static PyObject *taps(PyObject *self, PyObject *args) {
    int size;
    double extent;
    if (!PyArg_ParseTuple(args, "id", &size, &extent)) return NULL;
    if (size < 1 || !(extent > 0.0 && extent <= size)) {
        PyErr_SetString(PyExc_ValueError, "taps need 1 <= size and 0 < extent <= size");
        return NULL;
    }
    extent = (double)(float)extent;
    double scale = extent / SIDE, filter_scale = scale > 1.0 ? scale : 1.0;
    double support = SUPPORT * filter_scale;
    Py_ssize_t width = (Py_ssize_t)ceil(support) * 2 + 1;
    PyObject *result = PyBytes_FromStringAndSize(NULL, (2 + width) * SIDE * sizeof(int32_t));
    double *raw = PyMem_Malloc(sizeof(double) * width);
    if (result == NULL || raw == NULL) {
        Py_XDECREF(result);
        PyMem_Free(raw);
        return PyErr_NoMemory();
    }
    int32_t *bounds = (int32_t *)PyBytes_AS_STRING(result), *weights = bounds + 2 * SIDE;
    for (int o = 0; o < SIDE; o++) {
        double centre = (o + 0.5) * scale, total = 0.0;
        int low = (int)(centre - support + 0.5), high = (int)(centre + support + 0.5);
        if (low < 0) low = 0;
        if (high > size) high = size;
        int count = high - low;
        for (int t = 0; t < count; t++) {
            raw[t] = lanczos3((t + low - centre + 0.5) / filter_scale);
            total += raw[t];
        }
        for (Py_ssize_t t = 0; t < width; t++) {
            double w = t >= count ? 0.0 : total != 0.0 ? raw[t] / total : raw[t];
            w *= (double)(1 << PRECISION_BITS);
            weights[o * width + t] = w < 0 ? (int32_t)(w - 0.5) : (int32_t)(w + 0.5);
        }
        bounds[2 * o] = low;
        bounds[2 * o + 1] = count;
    }
    PyMem_Free(raw);
    return result;
}

static inline uint8_t clip8(int32_t total) {
    int32_t value = total >> PRECISION_BITS;
    return value < 0 ? 0 : value > 255 ? 255 : (uint8_t)value;
}

/* out[r][o] = clip8(sum over t of w[o][t] * in[r][first_o + t]), row by row. Pillow's 32-bit
 * sums never overflow: that is what the two spare bits of its precision are for. */
VECTORISED static void across(const uint8_t *in, int stride, int rows, const int32_t *taps,
                              int width, uint8_t *out) {
    const int32_t *bounds = taps, *weights = taps + 2 * SIDE;
    for (int r = 0; r < rows; r++) {
        const uint8_t *line = in + (size_t)r * stride;
        for (int o = 0; o < SIDE; o++) {
            const uint8_t *p = line + bounds[2 * o];
            const int32_t *w = weights + o * width;
            int32_t total = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < bounds[2 * o + 1]; t++) total += (int32_t)p[t] * w[t];
            out[r * SIDE + o] = clip8(total);
        }
    }
}

/* out[o][x] = clip8(sum over t of w[o][t] * in[first_o - shift + t][x]), a whole row at a time
 * so that the innermost loop is a multiply-add along contiguous memory. */
VECTORISED static void down(const uint8_t *in, int stride, int shift, const int32_t *taps,
                            int width, uint8_t *out, int32_t *total) {
    const int32_t *bounds = taps, *weights = taps + 2 * SIDE;
    for (int o = 0; o < SIDE; o++) {
        for (int x = 0; x < stride; x++) total[x] = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < bounds[2 * o + 1]; t++) {
            const uint8_t *row = in + (size_t)(bounds[2 * o] - shift + t) * stride;
            int32_t w = weights[o * width + t];
            for (int x = 0; x < stride; x++) total[x] += (int32_t)row[x] * w;
        }
        for (int x = 0; x < stride; x++) out[o * stride + x] = clip8(total[x]);
    }
}

static int taps_width(const Py_buffer *taps, int size) {
    Py_ssize_t per_output = taps->len / (Py_ssize_t)sizeof(int32_t) / SIDE - 2;
    if (per_output < 1 || (2 + per_output) * SIDE * (Py_ssize_t)sizeof(int32_t) != taps->len)
        return -1;
    const int32_t *bounds = taps->buf;
    for (int o = 0; o < SIDE; o++) {
        if (bounds[2 * o] < 0 || bounds[2 * o + 1] < 0 || bounds[2 * o + 1] > per_output ||
            bounds[2 * o] + bounds[2 * o + 1] > size)
            return -1;
    }
    return (int)per_output;
}

/* lanczos(pixels, width, height, across_taps, down_taps) -> 32 x 32 bytes, row-major. Pillow
 * resamples vertically first only for images about twice as tall as wide; otherwise it passes
 * across the rows the vertical pass will read, then down. */
static PyObject *lanczos(PyObject *self, PyObject *args) {
    Py_buffer pixels, ka, kd;
    int width, height;
    if (!PyArg_ParseTuple(args, "y*iiy*y*", &pixels, &width, &height, &ka, &kd)) return NULL;
    PyObject *result = NULL;
    uint8_t *middle = NULL, out[SIDE * SIDE];
    int32_t *total = NULL;
    int wa = taps_width(&ka, width), wd = taps_width(&kd, height);
    if (width < 1 || height < 1 || pixels.len != (Py_ssize_t)width * height || wa < 0 || wd < 0) {
        PyErr_SetString(PyExc_ValueError, "pixels or taps do not fit width x height");
        goto done;
    }
    const int32_t *a = ka.buf, *d = kd.buf;
    int vertical_first = 2 * width <= height + SIDE - 1;
    int first = d[0], rows = d[2 * (SIDE - 1)] + d[2 * (SIDE - 1) + 1] - first;
    for (int o = 0; o < SIDE; o++) {  /* the vertical pass reads only the rows passed across */
        if (d[2 * o] < first || d[2 * o] + d[2 * o + 1] > first + rows) {
            PyErr_SetString(PyExc_ValueError, "vertical taps out of order");
            goto done;
        }
    }
    if (rows < 1) rows = 1;
    middle = PyMem_RawMalloc(vertical_first ? (size_t)SIDE * width : (size_t)rows * SIDE);
    total = PyMem_RawMalloc(sizeof(int32_t) * (width > SIDE ? width : SIDE));
    if (middle == NULL || total == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (vertical_first) {
        down(pixels.buf, width, 0, d, wd, middle, total);
        across(middle, width, SIDE, a, wa, out);
    } else {
        across((const uint8_t *)pixels.buf + (size_t)first * width, width, rows, a, wa, middle);
        down(middle, SIDE, first, d, wd, out, total);
    }
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)out, SIDE * SIDE);
done:
    PyMem_RawFree(middle);
    PyMem_RawFree(total);
    PyBuffer_Release(&pixels);
    PyBuffer_Release(&ka);
    PyBuffer_Release(&kd);
    return result;
}

static PyMethodDef methods[] = {
    {"taps", taps, METH_VARARGS, "Fixed-point Lanczos taps from `size` inputs to 32."},
    {"lanczos", lanczos, METH_VARARGS, "Both Lanczos passes of a greyscale image to 32 x 32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_shrink", "pHash's 32 x 32 Lanczos shrink, Pillow's bits.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shrink(void) { return PyModule_Create(&module); }
