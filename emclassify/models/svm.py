"""The SVM baseline on handcrafted features, stored without pickle.

Training (:func:`fit_svm`) uses scikit-learn: standardised features, an RBF
``SVC(class_weight="balanced")`` whose ``C`` and ``gamma`` are chosen by an inner
stratified 3-fold CV (macro-F1), and a multinomial logistic calibration of the
one-vs-one decision values (fitted on inner out-of-fold decisions) for class
probabilities. The fitted numbers are copied into :class:`SVMModel`, a torch
module that evaluates the same decision function from its support vectors, so a
model file holds arrays only and loading it cannot run code.

Prediction: class = argmax of the calibrated probabilities.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

SVM_PARAM_GRID = {"C": [0.3, 1.0, 3.0, 10.0, 30.0], "gamma_factor": [0.3, 1.0, 3.0]}


class SVMModel(nn.Module):
    """RBF-SVM (one-vs-one) + logistic calibration, as tensors.

    forward(features: float ``N x F``) -> logits ``N x C`` (log-probabilities).
    """

    input_kind = "features"

    def __init__(self, mean, scale, support_vectors, dual_coef, intercept, n_support, gamma, calib_weight,
                 calib_bias, class_index=None, n_classes=None):
        super().__init__()
        # class_index: which of the model's n_classes the SVM was trained on (a CV fold may lack
        # some); the others get probability 0.
        self.n_trained = len(np.asarray(n_support))
        idx = np.arange(self.n_trained) if class_index is None else np.asarray(class_index)
        self.num_classes = int(n_classes) if n_classes is not None else self.n_trained
        if len(idx) != self.n_trained or idx.max() >= self.num_classes:
            raise ValueError(f"SVM class index {idx.tolist()} does not fit {self.num_classes} classes")
        self.register_buffer("class_index", torch.as_tensor(idx, dtype=torch.int64).clone())
        self.register_buffer("n_classes", torch.tensor([self.num_classes], dtype=torch.int64))
        for name, value in dict(mean=mean, scale=scale, support_vectors=support_vectors, dual_coef=dual_coef,
                                intercept=intercept, calib_weight=calib_weight, calib_bias=calib_bias).items():
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float64).clone())
        self.register_buffer("n_support", torch.as_tensor(np.asarray(n_support), dtype=torch.int64).clone())
        self.register_buffer("gamma", torch.as_tensor(float(gamma), dtype=torch.float64).reshape(1))

    @classmethod
    def from_state_dict(cls, tensors: Dict[str, torch.Tensor]) -> "SVMModel":
        names = ["mean", "scale", "support_vectors", "dual_coef", "intercept", "n_support", "gamma",
                 "calib_weight", "calib_bias", "class_index", "n_classes"]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"SVM weights lack {', '.join(missing)}")
        return cls(*[tensors[n].numpy() for n in names[:6]], float(tensors["gamma"].reshape(-1)[0]),
                   tensors["calib_weight"].numpy(), tensors["calib_bias"].numpy(), tensors["class_index"].numpy(),
                   int(tensors["n_classes"].reshape(-1)[0]))

    def decision_ovo(self, features: torch.Tensor) -> torch.Tensor:
        """One-vs-one decision values ``N x C(C-1)/2`` (libsvm order; binary: N x 1, >0 -> class 1)."""
        x = (features.double() - self.mean) / self.scale
        k = torch.exp(-self.gamma * torch.cdist(x, self.support_vectors).pow(2))  # N x n_SV
        starts = np.concatenate([[0], np.cumsum(self.n_support.numpy())])
        c = self.n_trained
        cols = []
        p = 0
        for i in range(c):
            for j in range(i + 1, c):
                si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                d = k[:, si] @ self.dual_coef[j - 1, si] + k[:, sj] @ self.dual_coef[i, sj] + self.intercept[p]
                cols.append(d)
                p += 1
        return torch.stack(cols, dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.decision_ovo(features) @ self.calib_weight.T + self.calib_bias
        trained = torch.log_softmax(logits, dim=1)
        out = torch.full((trained.shape[0], self.num_classes), -1e4, dtype=trained.dtype)
        out[:, self.class_index] = trained
        return out.float()


@dataclass
class SVMFitInfo:
    C: float
    gamma: float
    inner_cv_macro_f1: float
    n_support: List[int]


def _sklearn_ovo(svc, x: np.ndarray) -> np.ndarray:
    d = svc.decision_function(x)
    return d.reshape(len(x), -1)


def _fill_folds(x: np.ndarray, y: np.ndarray, folds: int):
    """``(x, y)`` with the examples of each class rarer than ``folds`` repeated up to ``folds`` copies."""
    counts = np.bincount(y)
    extra = [np.repeat(np.nonzero(y == c)[0], -(-folds // n))[: folds - n] for c, n in enumerate(counts) if 0 < n < folds]
    if not extra:
        return x, y
    idx = np.concatenate([np.arange(len(y))] + extra)
    return x[idx], y[idx]


def fit_svm(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
            param_grid: Optional[dict] = None) -> tuple:
    """Fit the SVM baseline; returns ``(SVMModel, SVMFitInfo)``. features: N x F float; labels: N int."""
    from joblib import parallel_config
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x = np.asarray(features, dtype=np.float64)
    y_full = np.asarray(labels, dtype=np.int64)
    present = np.unique(y_full)
    if len(present) < 2:
        raise ValueError("the SVM needs at least two classes in its training data")
    y = np.searchsorted(present, y_full)  # train on the classes present; map back in SVMModel
    scaler = StandardScaler().fit(x)
    scaler.scale_[scaler.scale_ == 0] = 1.0
    xs = scaler.transform(x)
    grid = param_grid or SVM_PARAM_GRID
    base_gamma = 1.0 / (x.shape[1] * max(float(xs.var()), 1e-12))  # sklearn's gamma="scale"
    # The inner C/gamma search and the calibration use 3 stratified folds (2 when a class has only 2
    # examples). A class with fewer examples than folds is repeated until it fills every fold: its
    # inner scores are then optimistic, but the search runs instead of failing, and the final SVM is
    # fitted on the data as it is.
    min_count = int(np.bincount(y).min())
    folds = max(2, min(3, min_count))
    xs_in, y_in = _fill_folds(xs, y, folds)
    inner = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    search = GridSearchCV(
        SVC(kernel="rbf", class_weight="balanced", decision_function_shape="ovo"),
        {"C": grid["C"], "gamma": [base_gamma * f for f in grid["gamma_factor"]]},
        scoring="f1_macro", cv=inner, refit=False,
    )
    # libsvm releases the GIL while it fits, so the grid's fits run in threads on every core torch
    # may use (no worker processes: none to spawn, nothing for a frozen bundle to re-launch); each fit
    # is deterministic, so the result does not depend on the thread count.
    with warnings.catch_warnings(), parallel_config(backend="threading", n_jobs=max(1, torch.get_num_threads())):
        warnings.simplefilter("ignore")  # folds where a rare class is never predicted warn about F1
        search.fit(xs_in, y_in)
        params = search.best_params_
        best = SVC(kernel="rbf", class_weight="balanced", decision_function_shape="ovo", **params).fit(xs, y)
        oof = cross_val_predict(
            SVC(kernel="rbf", class_weight="balanced", decision_function_shape="ovo", **params),
            xs_in, y_in, cv=inner, method="decision_function",
        ).reshape(len(y_in), -1)
    calib = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(oof, y_in)
    w, b = calib.coef_, calib.intercept_
    if len(present) == 2:  # sklearn's binary logistic regression has one row: expand to 2-class softmax
        w = np.vstack([-w / 2, w / 2])
        b = np.array([-b[0] / 2, b[0] / 2])
    model = SVMModel(scaler.mean_, scaler.scale_, best.support_vectors_, best.dual_coef_, best.intercept_,
                     best.n_support_, best._gamma, w, b, class_index=present, n_classes=n_classes)
    info = SVMFitInfo(C=float(best.C), gamma=float(best._gamma), inner_cv_macro_f1=float(search.best_score_),
                      n_support=[int(v) for v in best.n_support_])
    return model.eval(), info
