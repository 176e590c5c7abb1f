"""The tour's sections that need no trained model: MLE vs MAP, information and KL, pixel MSE."""

from __future__ import annotations

import torch

from vaelab.theory import information as info
from vaelab.theory import pixels
from vaelab.theory import regression as reg
from vaelab.viz.report import Section

DEGREE, SIGMA, TAU, POINTS = 9, 0.3, 1.0, 12  # a degree-9 fit to 12 noisy points overfits
SYMBOLS = {
    "entropy_p": "H(P)",
    "entropy_q": "H(Q)",
    "cross_entropy_pq": "H(P, Q)",
    "cross_entropy_qp": "H(Q, P)",
    "kl_pq": "KL(P || Q)",
    "kl_qp": "KL(Q || P)",
}


def mle_map_section(tour) -> Section:
    t = tour.t
    x, y, true_fn = reg.make_noisy_polynomial(n=POINTS, degree_true=3, noise_std=SIGMA, seed=0)
    X = reg.polynomial_features(x, DEGREE)
    w_mle = reg.least_squares(X, y)
    lam = SIGMA**2 / TAU**2
    w_map = reg.map_gaussian_prior(X, y, SIGMA, TAU)
    w_ridge = reg.ridge(X, y, lam)
    w_grad = reg.fit_map_by_gradient(X, y, SIGMA, TAU)
    nll_gap = (reg.gaussian_nll(w_mle, X, y, SIGMA) - reg.nll_as_mse(w_mle, X, y, SIGMA)).abs()
    flat = reg.map_gaussian_prior(X, y, SIGMA, 1e6)
    taus = torch.logspace(-2, 2, 40, dtype=torch.float64)
    path = reg.shrinkage_path(X, y, SIGMA, taus)
    figs = [
        (t["fits_caption"].format(degree=DEGREE, n=len(x)), tour.figure(
            "mle_vs_map", reg.fits_figure(x, y, true_fn, DEGREE, SIGMA, TAU))),
        (t["shrinkage_caption"], tour.figure("shrinkage", reg.shrinkage_figure(taus, path))),
    ]  # fmt: skip
    table = {t["lambda"]: lam, t["nll_vs_mse"]: nll_gap.item(),
             t["map_vs_ridge"]: (w_map - w_ridge).abs().max().item(),
             t["gradient_vs_ridge"]: (w_grad - w_ridge).abs().max().item(),
             t["flat_prior"]: (flat - w_mle).abs().max().item()}  # fmt: skip
    return Section(t["mle_title"], t["mle_text"], figures=figs, table=table)


def information_section(tour) -> Section:
    t = tour.t
    ex = info.worked_example()
    p, q = ex["p"], ex["q"]
    labels = [str(i) for i in range(1, len(p) + 1)]
    mu, logvar = torch.tensor([0.8, -1.5]), torch.tensor([-0.7, 0.4])
    closed = info.gaussian_kl_closed_form(mu, logvar).sum().item()
    mc, se = info.gaussian_kl_monte_carlo(mu, logvar, n=100_000, seed=0)
    table = {"P": ", ".join(f"{v:.3f}" for v in p), "Q": ", ".join(f"{v:.3f}" for v in q)}
    for key, name in SYMBOLS.items():
        table[f"{name} ({ex['unit']})"] = ex[key]
    table[t["gauss_kl_closed"]] = closed
    table[t["gauss_kl_mc"]] = mc.sum().item()
    table[t["gauss_kl_se"]] = se.pow(2).sum().sqrt().item()
    fig = tour.figure("kl_asymmetry", info.kl_asymmetry_figure(p, q, labels))
    return Section(t["info_title"], t["info_text"], figures=[(t["kl_caption"], fig)], table=table)


def paradox_section(tour) -> Section:
    t = tour.t
    result = pixels.mse_paradox(tour.gray_test, shift_px=1)
    ex = result["examples"][:3]
    fig = pixels.paradox_figure(tour.gray_test[ex], result["shifted"][ex], result["erased"][ex],
                                result["mse_shifted"][ex], result["mse_erased"][ex])  # fmt: skip
    table = {t["paradox_fraction"]: result["fraction"],
             t["paradox_shift_mse"]: result["mse_shifted"].mean().item(),
             t["paradox_erase_mse"]: result["mse_erased"].mean().item()}  # fmt: skip
    return Section(t["paradox_title"], t["paradox_text"],
                   figures=[(t["paradox_caption"], tour.figure("mse_paradox", fig))],
                   table=table)  # fmt: skip
