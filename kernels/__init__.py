"""Kernel definitions (one folder each), training and the hls4ml build. Toolchain-only code."""
