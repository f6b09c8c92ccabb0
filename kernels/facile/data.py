"""Synthetic HCAL channels for FACILE: one row per channel, 15 features, target = true in-time energy.

Physically motivated, not CMS simulation. Each channel sees a signal deposit in the triggering bunch
crossing (the "sample of interest", SOI = time slice 3), in-time and out-of-time pileup from
neighbouring crossings, a per-channel pedestal and electronic noise. Charge is digitised in 8 time
slices of 25 ns; the pulse of a deposit in crossing b is the shaped pulse shifted by b slices, so
out-of-time pileup leaks into the SOI window as it does in the real detector.

Units: charges and pedestals in 100 fC; gain in GeV per 100 fC (nominal 1.0), so one charge unit
is ~1 GeV at nominal gain and the features fit a 16-bit fixed-point input with 9 integer bits.

Features (column: name):
   0-7  q_ts0 .. q_ts7  raw charge per time slice, pedestal included [100 fC]
   8    pedestal        per-time-slice pedestal of the channel, from calibration [100 fC]
   9    noise           electronic noise (pedestal width) per time slice [100 fC]
  10    gain            channel gain [GeV / 100 fC]
  11    ieta            tower index in eta, -29..-1, 1..29 (|ieta| <= 16 barrel HB, above endcap HE)
  12    iphi            tower index in phi, 1..72
  13    depth           longitudinal segment, 1..4 in HB, 1..7 in HE
  14    pileup          number of pileup interactions in the event
"""

import numpy as np

N_FEATURES = 15
FEATURES = [f"q_ts{k}" for k in range(8)] + ["pedestal", "noise", "gain", "ieta", "iphi", "depth", "pileup"]
N_SLICES = 8
SOI = 3
SLICE_NS = 25.0
MAX_ENERGY_GEV = 200.0


def _pulse_fractions(t0_ns):
    """Fraction of a pulse's charge in each of 8 slices, for pulses starting t0_ns into the SOI.

    The shape is a gamma-like scintillator + photodetector response (rise ~5 ns, tail ~15 ns),
    integrated numerically over each 25 ns window; t0_ns has shape (n,) and may be negative.
    """
    t = np.linspace(0.0, SLICE_NS * N_SLICES, 401)
    dt = t[1] - t[0]
    start = SOI * SLICE_NS + t0_ns[:, None]
    tau = np.clip(t[None, :] - start, 0.0, None)
    shape = tau**2 * np.exp(-tau / 6.0)
    frac = np.stack(
        [shape[:, (t >= k * SLICE_NS) & (t < (k + 1) * SLICE_NS)].sum(axis=1) * dt for k in range(N_SLICES)], axis=1
    )
    return frac / (2 * 6.0**3)  # the analytic integral of tau^2 exp(-tau/6)


def generate(n, seed=0):
    """Return (features float32 [n, 15], true in-time energy float32 [n]) for n channels."""
    rng = np.random.default_rng(seed)
    abs_ieta = rng.integers(1, 30, n)
    ieta = abs_ieta * rng.choice([-1, 1], n)
    iphi = rng.integers(1, 73, n)
    barrel = abs_ieta <= 16
    depth = np.where(barrel, rng.integers(1, 5, n), rng.integers(1, 8, n))
    pileup = rng.poisson(rng.uniform(20, 70, n)).astype(np.float64)

    gain = rng.normal(1.0, 0.12, n).clip(0.6, 1.4)
    pedestal = rng.uniform(0.03, 0.09, n)
    noise = rng.uniform(0.01, 0.04, n)

    # Signal: 30% of channels are empty; the rest log-uniform between 0.5 GeV and 150 GeV.
    has_signal = rng.random(n) > 0.3
    signal = np.where(has_signal, np.exp(rng.uniform(np.log(0.5), np.log(150.0), n)), 0.0)
    # Pileup energy per crossing grows with pileup and towards the forward endcap.
    pu_mean = pileup * 0.004 * (1.0 + abs_ieta / 10.0) / depth
    crossings = np.arange(-SOI, N_SLICES - SOI)  # crossings whose pulses start inside the window
    pu_energy = rng.exponential(1.0, (n, crossings.size)) * pu_mean[:, None]
    pu_energy *= rng.random((n, crossings.size)) < 0.5
    in_time = signal + pu_energy[:, SOI]

    # Photostatistics: relative smearing ~ 15%/sqrt(E).
    smear = 1.0 + rng.normal(0.0, 1.0, (n, crossings.size)) * 0.15 / np.sqrt(np.maximum(pu_energy, 0.05))
    deposits = pu_energy * smear
    deposits[:, SOI] = in_time * (1.0 + rng.normal(0.0, 0.15 / np.sqrt(np.maximum(in_time, 0.05))))
    deposits = deposits.clip(0.0, None)

    jitter = rng.normal(0.0, 2.0, n)
    frac = _pulse_fractions(jitter)
    charge = np.zeros((n, N_SLICES))
    for i, b in enumerate(crossings):
        shifted = np.zeros_like(frac)
        if b >= 0:
            shifted[:, b:] = frac[:, : N_SLICES - b]
        else:
            shifted[:, : N_SLICES + b] = frac[:, -b:]
        charge += (deposits[:, i] / gain)[:, None] * shifted
    charge += pedestal[:, None] + rng.normal(0.0, 1.0, (n, N_SLICES)) * noise[:, None]

    x = np.column_stack([charge, pedestal, noise, gain, ieta, iphi, depth, pileup]).astype(np.float32)
    y = np.minimum(in_time, MAX_ENERGY_GEV).astype(np.float32)
    return x, y
