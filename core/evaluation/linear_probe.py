"""Linear-probe accuracy: a multinomial logistic regression on frozen features.

Features are standardised with statistics of the training set only, then scikit-learn's
:class:`~sklearn.linear_model.LogisticRegression` (L-BFGS, multinomial loss, L2 penalty) is
fitted. Standardising makes L-BFGS converge in a few hundred iterations; on 60,000 x 512
float32 features with 10 classes and 2 CPU cores a fit takes well under a minute. Lower
``max_iter`` for a cheaper (slightly less converged) probe; hitting the iteration cap is
the intended budget, so scikit-learn's ``ConvergenceWarning`` is silenced.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["linear_probe_accuracy"]


def _as_numpy(name: str, array: torch.Tensor | ArrayLike, ndim: int) -> np.ndarray:
    """Tensor or array-like -> numpy array with ``ndim`` dimensions (no copy when possible)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != ndim:
        expected = "[n, dim]" if ndim == 2 else "[n]"
        raise ValueError(f"{name} must have shape {expected}, got shape {array.shape}")
    return array


def _as_features(name: str, array: torch.Tensor | ArrayLike) -> np.ndarray:
    features = _as_numpy(name, array, 2)
    if features.dtype not in (np.float32, np.float64):
        features = features.astype(np.float32)
    return features


def linear_probe_accuracy(
    train_features: torch.Tensor | ArrayLike,
    train_labels: torch.Tensor | ArrayLike,
    test_features: torch.Tensor | ArrayLike,
    test_labels: torch.Tensor | ArrayLike,
    max_iter: int = 1000,
    C: float = 1.0,
) -> float:
    """Fit a logistic regression on train features and return its test accuracy.

    Args:
        train_features: ``[N, D]`` features (tensor or numpy), N >= 2, at least two classes.
        train_labels: ``[N]`` integer labels.
        test_features: ``[M, D]`` features, M >= 1.
        test_labels: ``[M]`` integer labels.
        max_iter: L-BFGS iteration cap (the cost knob).
        C: Inverse L2 regularisation strength.

    Returns:
        Fraction of test points classified correctly, in ``[0, 1]``.
    """
    x_train = _as_features("train_features", train_features)
    x_test = _as_features("test_features", test_features)
    y_train = _as_numpy("train_labels", train_labels, 1)
    y_test = _as_numpy("test_labels", test_labels, 1)
    if len(y_train) != len(x_train):
        raise ValueError(
            f"train_labels has shape {y_train.shape} but train_features has shape {x_train.shape}"
        )
    if len(y_test) != len(x_test):
        raise ValueError(
            f"test_labels has shape {y_test.shape} but test_features has shape {x_test.shape}"
        )
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(
            f"test_features has shape {x_test.shape} but train_features has shape "
            f"{x_train.shape}; the feature dims differ"
        )
    if len(x_test) == 0:
        raise ValueError("test_features is empty; accuracy is undefined")
    if len(np.unique(y_train)) < 2:
        raise ValueError("train_labels must contain at least two classes for a linear probe")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")

    # Imported here: scikit-learn takes over a second to import and only the probe needs it.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(solver="lbfgs", max_iter=max_iter, C=C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        classifier.fit(scaler.transform(x_train), y_train)
    predictions = classifier.predict(scaler.transform(x_test))
    return float(np.mean(predictions == y_test))
