"""The vendors' side of the card drivers: their Python APIs, imported only when a card is used, and
the board a platform or shell name is for."""

import importlib
from types import ModuleType

from faast.contract.errors import DeviceError


def import_vendor(module: str, hint: str) -> ModuleType:
    """A vendor's Python API (pyxrt, pynq), imported only when a hardware driver is used. Importing one
    can fail in more ways than ImportError (PYNQ opens $XILINX_XRT's library with ctypes: OSError)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DeviceError(hint) from None
    except Exception as error:  # noqa: BLE001 — whatever the vendor's import raised, said once
        raise DeviceError(f"{hint}: importing {module} failed: {type(error).__name__}: {error}") from None


def board(name: str) -> str:
    """The board a platform or shell name is for: xclbins name platforms, XRT names cards by shell."""
    name = name.lower()
    if "u250" in name:
        return "u250"
    if "aws" in name or "vu9p" in name:
        return "aws-f1"
    return name
