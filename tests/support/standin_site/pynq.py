"""`import pynq` in a child process gives the real PYNQ 3.0.1 over the STAND-IN of XRT's library
(tests/support/standin_libxrt.py), with the cards listed in $FAAST_STANDIN_CARDS."""

import sys

from _standins import load

sys.modules[__name__] = load("standin_libxrt")
