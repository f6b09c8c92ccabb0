"""The device runtime, installed as faast.host: every way of executing a built kernel behind one
`Device` interface (host/device.py) — the emulator (exact integer arithmetic on the CPU), hls4ml's
C simulation, and the XRT and PYNQ drivers for Alveo U250 and AWS F1 cards."""
