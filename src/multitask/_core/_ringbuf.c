/* Placeholder so the package builds while the transport is being written. */
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_ringbuf", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__ringbuf(void) { return PyModule_Create(&mod); }
