"""`import pynq` in a child process gives the RECORDING STAND-IN of tests/support/recording_pynq.py,
with the cards listed in $FAAST_STANDIN_CARDS."""

import sys

from _standins import load

sys.modules[__name__] = load("recording_pynq")
