"""``probe=logistic``: the linear probe of representation-learning papers (CLIP's, for one): an
L2-regularised logistic regression solved to convergence with L-BFGS (scikit-learn) for each C of a
log grid, warm-started from the previous C, the C with the best val ROC-AUC kept. Its result does not
depend on epochs or a learning rate, so it measures the embeddings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from vidlab.probe.config import PROBES, ProbeConfig
from vidlab.schema import at_least, one_of, require

if TYPE_CHECKING:  # Lightning and MLflow are not loaded to check a logistic probe's config
    from vidlab.probe.data import Split
    from vidlab.probe.fitting import FitContext


@dataclass
class LogisticConfig(ProbeConfig):
    """L2-regularised logistic regression solved to convergence (L-BFGS), ``C`` chosen on val."""

    C_grid: list[float]
    max_iter: int
    tol: float
    class_weight: str

    def __post_init__(self) -> None:
        require(len(self.C_grid) > 0 and all(c > 0 for c in self.C_grid),
                f"C_grid must be positive values (got {self.C_grid})")
        at_least(1, self, "max_iter")
        require(self.tol > 0, f"tol must be > 0 (got {self.tol})")
        one_of(self, "class_weight", "auto", "none")


@PROBES.register("logistic", LogisticConfig)
class LogisticProbe:
    needs_videos = False

    def __init__(self, C_grid: list[float], max_iter: int, tol: float, class_weight: str):
        self.grid = sorted(C_grid)
        self.model = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=True,
                                        class_weight="balanced" if class_weight == "auto" else None)
        self.table = pd.DataFrame()
        self.output: Path | None = None

    def fit(self, splits: dict[str, Split], context: FitContext) -> dict[str, float]:
        train, val = splits["train"], splits["val"]
        rows, best = [], None
        for C in self.grid:  # small C first: the strongly regularised solution warm-starts the next
            self.model.set_params(C=C)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                self.model.fit(train.x, train.y)
            auc = float(roc_auc_score(val.y, self.model.decision_function(val.x)))
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            rows.append({"C": C, "val_roc_auc": auc, "iterations": int(self.model.n_iter_[0]), "converged": converged})
            if best is None or auc > best[0]:  # ties keep the smaller C (the simpler model)
                best = (auc, C, self.model.coef_.copy(), self.model.intercept_.copy())
        _, C, self.model.coef_, self.model.intercept_ = best
        self.model.set_params(C=C)
        self.table = pd.DataFrame(rows)
        self.output = context.output_dir / "probe" / "c_grid.csv"
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(self.output, index=False)
        unconverged = int((~self.table.converged).sum())
        if unconverged:
            print(f"probe=logistic: L-BFGS stopped at max_iter={self.model.max_iter} for {unconverged} of "
                  f"{len(self.grid)} values of C")
        return {"probe/C": C, "probe/unconverged_fits": unconverged}

    def scores(self, split: Split) -> np.ndarray:
        return self.model.predict_proba(split.x)[:, 1]

    def files(self) -> list[Path]:
        return [self.output] if self.output else []

    def mlflow_model(self, scaler: StandardScaler) -> tuple[Pipeline, str]:
        return make_pipeline(scaler, self.model), "sklearn"
