"""Synthetic jet images for top tagging, as SonicCMS made them from CMS jets: the jet's constituent
pT fraction on an (η, φ) grid centred on the jet axis, the same image in all three channels.

Physically motivated, not CMS simulation. A jet of pT 400-800 GeV (AK8-like, the grid spans
|Δη|, |Δφ| < 0.8) is made of prongs, each fragmenting into a Poisson number of particles spread
around the prong axis; pileup adds soft particles over the whole grid.
- top jets (label 1): three prongs (b and the W's two quarks) sharing the pT by a Dirichlet(3, 3, 3)
  split, their directions scaled so that the three-prong invariant mass is m_top = 173 GeV (with a
  10 GeV resolution), using m² ≈ Σ pT_i pT_j ΔR_ij² for boosted, nearly collinear prongs.
- QCD jets (label 0): one hard prong, and in 40% of jets a second softer one (z < 0.3 from a
  gluon splitting) at a mass drawn from a falling distribution (mean 40 GeV).
"""

import numpy as np

PIXELS = 64
HALF_WIDTH = 0.8  # grid covers the jet axis ± this in η and φ
TOP_MASS, TOP_MASS_RESOLUTION = 173.0, 10.0
PILEUP_PARTICLES, PILEUP_PT = 30, 1.0  # mean count and mean pT [GeV] of soft pileup particles on the grid


def _prong_directions(z, pt, mass, rng):
    """Offsets (Δη, Δφ) of prongs with pT fractions z whose pair mass sum equals `mass`, centred
    on their pT-weighted axis."""
    offsets = rng.normal(0.0, 1.0, (len(z), 2))
    offsets -= (z[:, None] * offsets).sum(0)
    pairs = sum(
        z[i] * z[j] * np.sum((offsets[i] - offsets[j]) ** 2) for i in range(len(z)) for j in range(i + 1, len(z))
    )
    return offsets * mass / (pt * np.sqrt(max(pairs, 1e-12)))


def _image(prongs, pt, rng, size):
    """Histogram the fragments of the prongs (list of (Δη, Δφ, z)) plus pileup into a pT image."""
    eta, phi, weights = [], [], []
    for d_eta, d_phi, z in prongs:
        count = 1 + rng.poisson(12 * z + 3)
        shares = rng.dirichlet(np.full(count, 0.7)) * z * pt
        spread = rng.uniform(0.01, 0.04)
        eta.append(d_eta + rng.normal(0, spread, count))
        phi.append(d_phi + rng.normal(0, spread, count))
        weights.append(shares)
    soft = rng.poisson(PILEUP_PARTICLES)
    eta.append(rng.uniform(-HALF_WIDTH, HALF_WIDTH, soft))
    phi.append(rng.uniform(-HALF_WIDTH, HALF_WIDTH, soft))
    weights.append(rng.exponential(PILEUP_PT, soft))
    edges = np.linspace(-HALF_WIDTH, HALF_WIDTH, size + 1)
    image, _, _ = np.histogram2d(
        np.concatenate(eta), np.concatenate(phi), bins=(edges, edges), weights=np.concatenate(weights)
    )
    return image / image.sum()


def generate(n, seed=0, size=PIXELS):
    """n jet images (float32 [n, size, size, 3], pT fractions) and labels (int, 1 = top, 0 = QCD)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = np.empty((n, size, size, 3), np.float32)
    for k, top in enumerate(labels):
        pt = rng.uniform(400.0, 800.0)
        if top:
            z = rng.dirichlet([3.0, 3.0, 3.0])
            mass = max(rng.normal(TOP_MASS, TOP_MASS_RESOLUTION), 100.0)
        elif rng.random() < 0.4:
            soft = rng.uniform(0.05, 0.3)
            z = np.array([1.0 - soft, soft])
            mass = rng.exponential(40.0) + 5.0
        else:
            z = np.array([1.0])
            mass = 0.0
        offsets = _prong_directions(z, pt, mass, rng) if len(z) > 1 else np.zeros((1, 2))
        image = _image([(o[0], o[1], zi) for o, zi in zip(offsets, z, strict=True)], pt, rng, size)
        images[k] = image[:, :, None]
    return images, labels
