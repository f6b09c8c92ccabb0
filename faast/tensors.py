"""Wire ↔ numpy: Triton datatypes, config types and numpy dtypes, and tensor (de)serialisation.

Every transport converts tensors through this module only.
"""

import numpy as np

from .contract.errors import InvalidArgument

# Triton protocol datatype → numpy dtype (little-endian, as the protocol's raw format is).
NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

# Which InferTensorContents field carries each datatype when a client sends typed contents.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# The datatype Triton names for each contents field (the widest type the field carries).
CONTENTS_DATATYPE = {
    "bool_contents": "BOOL",
    "int_contents": "INT32",
    "int64_contents": "INT64",
    "uint_contents": "UINT32",
    "uint64_contents": "UINT64",
    "fp32_contents": "FP32",
    "fp64_contents": "FP64",
    "bytes_contents": "BYTES",
}


def config_to_datatype(data_type_name):
    """ModelConfig enum name (TYPE_FP32) → protocol datatype (FP32); Triton calls TYPE_STRING BYTES."""
    name = data_type_name.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def element_count(shape):
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def byte_size(datatype, shape):
    return element_count(shape) * NUMPY[datatype].itemsize


def from_raw(datatype, shape, raw):
    """Raw little-endian bytes (any buffer) → read-only array of `shape` viewing them; copied only
    when they are not aligned for the dtype (the byte size was checked by the dataplane)."""
    array = np.frombuffer(raw, dtype=NUMPY[datatype]).reshape(shape)
    return array if array.flags.aligned else array.copy()


def contents_to_raw(name, model_name, datatype, contents):
    """Typed InferTensorContents → raw bytes; the field present must be the one for `datatype`."""
    present = [field.name for field, _ in contents.ListFields()]
    expected = CONTENTS_FIELD.get(datatype)
    if present and present != [expected]:
        sent = CONTENTS_DATATYPE[present[0]]
        raise InvalidArgument(
            f"unexpected explicit tensor data for input tensor '{name}' for model '{model_name}' of type "
            f"'{sent}', expected datatype '{datatype}'"
        )
    if datatype not in NUMPY or expected is None:
        raise InvalidArgument(f"datatype '{datatype}' of input '{name}' is not supported by faast")
    values = getattr(contents, expected)
    dtype = NUMPY[datatype]
    if (
        dtype.kind in "iu"
        and values
        and not (np.iinfo(dtype.name).min <= min(values) and max(values) <= np.iinfo(dtype.name).max)
    ):
        raise InvalidArgument(
            f"explicit tensor data for input tensor '{name}' for model '{model_name}' holds values "
            f"out of the range of '{datatype}'"
        )
    return np.asarray(values, dtype=dtype).tobytes()


def wire_array(array, datatype):
    """`array` laid out as the wire carries `datatype`: C-contiguous, in its numpy dtype; a copy only
    when it is not already."""
    return np.ascontiguousarray(array, dtype=NUMPY[datatype])


def to_raw(array, datatype):
    return wire_array(array, datatype).tobytes()
