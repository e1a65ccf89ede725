// Shim for libhdf5, found through pkg-config (see Package.swift).
//
// Many HDF5 "constants" are macros that Swift cannot import as values:
// H5T_NATIVE_FLOAT expands to `(H5open(), H5T_NATIVE_FLOAT_g)`, H5F_ACC_TRUNC
// to `(H5check(), H5open(), 0x0002u)`, H5P_DEFAULT to an untyped `0`. Each one
// used from Swift is exposed here as a `static inline` function with the
// proper C type. Calling them runs H5open(), so callers hold the GoldenIO lock.
#ifndef QP_CHDF5_SHIM_H
#define QP_CHDF5_SHIM_H

#include <hdf5.h>

// Property lists, dataspaces, error stacks.
static inline hid_t qp_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t qp_H5S_ALL(void) { return H5S_ALL; }
static inline hid_t qp_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline hid_t qp_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t qp_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }
static inline hid_t qp_H5P_DATASET_XFER(void) { return H5P_DATASET_XFER; }
static inline hid_t qp_H5P_ATTRIBUTE_CREATE(void) { return H5P_ATTRIBUTE_CREATE; }

// File access flags.
static inline unsigned qp_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned qp_H5F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline unsigned qp_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned qp_H5F_OBJ_ALL(void) { return H5F_OBJ_ALL; }

// Memory (native) types: what Swift arrays hold.
static inline hid_t qp_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t qp_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t qp_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t qp_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t qp_H5T_NATIVE_UINT64(void) { return H5T_NATIVE_UINT64; }

// File types: little-endian, as numpy/h5py write them on every common host.
static inline hid_t qp_H5T_IEEE_F32LE(void) { return H5T_IEEE_F32LE; }
static inline hid_t qp_H5T_IEEE_F64LE(void) { return H5T_IEEE_F64LE; }
static inline hid_t qp_H5T_STD_I32LE(void) { return H5T_STD_I32LE; }
static inline hid_t qp_H5T_STD_I64LE(void) { return H5T_STD_I64LE; }

// Strings.
static inline hid_t qp_H5T_C_S1(void) { return H5T_C_S1; }
static inline size_t qp_H5T_VARIABLE(void) { return H5T_VARIABLE; }

// Link names of a group in the order its index stores them (H5_ITER_NATIVE). Dense groups are
// then walked straight through their B-tree; by-index lookups (H5Lget_name_by_idx) build and
// release a link table, which on a corrupted fractal heap frees a garbage pointer inside
// HDF5 1.10 (found by a bit flip in the bad-input corpus). `cb` gets each name; it returns
// non-zero to stop. Returns < 0 on failure.
typedef int (*qp_link_name_cb)(const char *name, void *context);
struct qp_link_names_context { qp_link_name_cb cb; void *context; };
static inline herr_t qp_link_names_visit(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group; (void)info;
    struct qp_link_names_context *c = (struct qp_link_names_context *)data;
    return c->cb(name, c->context);
}
static inline herr_t qp_link_names(hid_t group, qp_link_name_cb cb, void *context) {
    struct qp_link_names_context c = { cb, context };
    hsize_t index = 0;
#if H5_VERSION_GE(1, 12, 0)
    return H5Literate1(group, H5_INDEX_NAME, H5_ITER_NATIVE, &index, qp_link_names_visit, &c);
#else
    return H5Literate(group, H5_INDEX_NAME, H5_ITER_NATIVE, &index, qp_link_names_visit, &c);
#endif
}

#endif
