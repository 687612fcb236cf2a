"""Open Inference Protocol datatype names <-> numpy dtypes: the one table the server and the client share.

Multi-byte types are little-endian on the wire (what tritonclient sends and reads). BYTES has no fixed-size
dtype: its elements are Python bytes in an object array, length-prefixed in raw form.
"""

from __future__ import annotations

import numpy as np

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}


def datatype_of(dtype: np.dtype | str) -> str | None:
    """The OIP datatype name of a numpy dtype (or dtype name such as "uint8"); None when it has none."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    for name, candidate in DATATYPES.items():
        if candidate.kind == dtype.kind and candidate.itemsize == dtype.itemsize:
            return name
    return None
