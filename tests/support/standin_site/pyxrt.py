"""`import pyxrt` in a child process (a real `faast devices` or `faast serve`) gives the RECORDING
STAND-IN of tests/support/recording_pyxrt.py, with the cards listed in $FAAST_STANDIN_CARDS."""

import sys

from _standins import load

sys.modules[__name__] = load("recording_pyxrt")
