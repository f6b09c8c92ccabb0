"""A client's shared memory, seen in place, as a type of its own.

A view of a registered region lies in the client's mapping: if the client truncates the object, any
access past its new end raises SIGBUS, which would end the server. Only the host's guarded compiled
functions (faast.host.fastpath: packing inputs, unpacking outputs) survive that. So such memory never
travels as an ndarray: it is a `ClientMemory`, which is not an array — mypy refuses it where an
ndarray is expected, and at run time numpy, memoryview() and iteration raise TypeError. Shaping and
cutting rows (which read nothing) are allowed; the guarded functions alone take the array out.
"""

from typing import NoReturn

import numpy as np

REFUSED = "a client's shared memory is read and written only by faast.host.fastpath's guarded functions"


class ClientMemory:
    """Rows of a client's shared memory: a dtype, a shape, and no way to read them but the guard's."""

    __slots__ = ("_array",)

    def __init__(self, view: memoryview | np.ndarray):
        """`view`: bytes of the client's mapping, or an array already viewing them."""
        self._array = view if isinstance(view, np.ndarray) else np.frombuffer(view, np.uint8)  # reads nothing

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def size(self) -> int:
        return self._array.size

    @property
    def nbytes(self) -> int:
        return self._array.nbytes

    def __len__(self) -> int:
        return len(self._array)

    def typed(self, dtype, shape: tuple[int, ...]) -> "ClientMemory":
        """The same bytes as elements of `dtype` in `shape`."""
        return ClientMemory(self._array.reshape(-1).view(np.uint8).view(dtype).reshape(shape))

    def reshape(self, *shape: int) -> "ClientMemory":
        return ClientMemory(self._array.reshape(*shape))

    def __getitem__(self, rows: slice) -> "ClientMemory":
        """Rows `rows` (a slice: the device cuts blocks into executions)."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(REFUSED)
        return ClientMemory(self._array[rows])

    def guarded_array(self) -> np.ndarray:
        """The array itself, for faast.host.fastpath's guarded functions only: they read or write it
        under the SIGBUS guard."""
        return self._array

    def __array__(self, *args, **kwargs) -> NoReturn:
        raise TypeError(REFUSED)

    def __iter__(self) -> NoReturn:
        raise TypeError(REFUSED)

    def __repr__(self) -> str:
        return f"ClientMemory(dtype={self.dtype}, shape={self.shape})"


Rows = np.ndarray | ClientMemory  # a block of kernel rows: the host's own array, or a client's memory
