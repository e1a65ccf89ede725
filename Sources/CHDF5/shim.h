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

#endif
