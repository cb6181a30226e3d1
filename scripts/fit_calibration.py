"""Fit the confidence calibration (connector.classify.CALIBRATION) on labelled tickets.

    .venv/bin/python scripts/fit_calibration.py tests/data/tickets.csv --partial 2
    .venv/bin/python scripts/fit_calibration.py tests/data/tickets.csv \
        --check other.csv other-catalogue.yaml      # expected calibration error elsewhere

Fits one logistic model per kind of answer (a service, or no service) of "the answer is
right" on the features classify computes, with a little L2 shrinkage, and prints the table
to paste into connector/classify/calibration.py. Fit on the project's own tickets only: another
organisation's tickets are for checking that the fitted confidence means "right this often"
there too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from connector.catalogue import load_catalogue
from connector.classify import Features, build_index, calibrated, shipped_thesaurus
from connector.evaluate import (
    TARGETS,
    expected_calibration_error,
    largest_share,
    read_labelled,
    reliability,
)

SHRINK = 1.0  # L2 penalty on the weights (not the bias), in units of the summed log-loss


def labelled_features(
    data: str, catalogue_path: str, keep: tuple[int, int] | None = None
) -> list[tuple[Features, bool, str | None, str | None]]:
    """Per ticket: the features, whether the answer was right, predicted and true service.
    With `keep` = (k, n), only every n-th thesaurus concept from the k-th on is used."""
    catalogue = load_catalogue(catalogue_path)
    concepts = shipped_thesaurus()
    if keep is not None:
        concepts = tuple(c for i, c in enumerate(concepts) if i % keep[1] == keep[0])
    index = build_index(catalogue, concepts)
    rows = []
    for ticket in read_labelled(data, catalogue):
        match, features = index.classify_with_features(ticket.body, ticket.subject)
        rows.append((features, match.service == ticket.service, match.service, ticket.service))
    return rows


def fit(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Logistic regression by Newton's method; column 0 of x is the bias."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], SHRINK)
    penalty[0] = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x.T * (p * (1 - p))) @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--catalogue", default="catalogue.yaml")
    parser.add_argument("--check", nargs=2, action="append", default=[], metavar=("CSV", "CAT"))
    parser.add_argument(
        "--partial",
        type=int,
        default=0,
        metavar="N",
        help="also fit on N indexes that each keep only 1/N of the thesaurus",
    )
    args = parser.parse_args()
    rows = labelled_features(args.data, args.catalogue)
    # The thesaurus was written beside this catalogue; other organisations' catalogues are
    # covered less well. Indexes with part of it stand for them, so that the confidence
    # learns what thinner evidence is worth.
    training = list(rows)
    for part in range(args.partial):
        training += labelled_features(args.data, args.catalogue, (part, args.partial))
    table: dict[str, tuple[float, ...]] = {}
    for kind in ("service", "none"):
        chosen = [(f[1], ok) for f, ok, _, _ in training if f[0] == kind]
        x = np.array([[1.0, *values] for values, _ in chosen])
        y = np.array([float(ok) for _, ok in chosen])
        table[kind] = tuple(round(float(v), 4) for v in fit(x, y))
    print("CALIBRATION: dict[str, tuple[float, ...]] = {")
    for kind, weights in table.items():
        print(f'    "{kind}": {weights},')
    print("}")
    import connector.classify as classify

    classify.CALIBRATION.update(table)
    for data, catalogue in [(args.data, args.catalogue), *args.check]:
        checked = rows if data == args.data else labelled_features(data, catalogue)
        confidences = [calibrated(f) for f, _, _, _ in checked]
        correct = [ok for _, ok, _, _ in checked]
        bands = reliability(confidences, correct)
        ece = expected_calibration_error(bands, len(checked))
        accuracy = sum(correct) / len(correct)
        name = Path(data).parent.name or data
        shares = " ".join(
            f"at {target:.0%}: {largest_share(confidences, correct, target)['share']:.1%}"
            for target in TARGETS
        )
        print(f"{name}: n={len(checked)} accuracy={accuracy:.3f} ECE={ece:.3f} routed {shares}")
        for band in bands:
            print(
                f"   {band['low']:.1f}-{band['high']:.1f} n={band['n']:>3}"
                f" conf={band['confidence']:.3f} acc={band['accuracy']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
