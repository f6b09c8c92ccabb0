"""ap_fixed's quantization and overflow modes, in the order fastpath.cpp numbers them.

Their own module so that fixed.py (the numpy arithmetic) and fastpath.py (the compiled loops, which
take a mode as its index here) share one table without importing each other.
"""

QUANTIZATION = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
OVERFLOW = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
