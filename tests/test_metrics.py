"""Metrics against hand-computed confusion matrices, including zero-division cases."""
from __future__ import annotations

import numpy as np
import pytest

from emclassify import metrics


def test_confusion_matrix_rows_true_columns_predicted():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_hand_computed():
    cm = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [0, 0, 4]])
    pc = metrics.per_class(cm, ["a", "b", "c"])
    # class a: TP 5, FN 1, FP 2, TN 16 - 5 - 1 - 2 = 8
    assert pc["a"]["tpr"] == pytest.approx(5 / 6)
    assert pc["a"]["ppv"] == pytest.approx(5 / 7)
    assert pc["a"]["tnr"] == pytest.approx(8 / 10)
    assert pc["a"]["npv"] == pytest.approx(8 / 9)
    assert pc["a"]["f1"] == pytest.approx(10 / 13)
    assert pc["b"]["f1"] == pytest.approx(6 / 10) and pc["b"]["support"] == 6
    assert pc["c"]["ppv"] == pytest.approx(4 / 5) and pc["c"]["tpr"] == 1.0
    s = metrics.summary(cm, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(12 / 16)
    assert s["macro_f1"] == pytest.approx(np.mean([10 / 13, 6 / 10, 8 / 9]))


def test_zero_division_cases():
    cm = np.array([[3, 0, 0],
                   [2, 0, 0],     # class b never predicted: PPV 0/0 -> 0, F1 0
                   [0, 0, 0]])    # class c absent from truth and predictions
    pc = metrics.per_class(cm, ["a", "b", "c"])
    assert pc["b"] == {"tpr": 0.0, "tnr": 1.0, "ppv": 0.0, "npv": 0.6, "f1": 0.0, "support": 2}
    assert pc["c"]["tpr"] == 0.0 and pc["c"]["ppv"] == 0.0 and pc["c"]["tnr"] == 1.0 and pc["c"]["support"] == 0
    s = metrics.summary(cm, ["a", "b", "c"])
    assert s["macro_f1"] == pytest.approx((6 / 8 + 0.0) / 2)  # c is in neither truth nor prediction: not averaged
    assert metrics.summary(np.zeros((2, 2), int), ["x", "y"])["accuracy"] == 0.0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60))))
def test_metrics_equal_scikit_learn(case):
    """Our confusion-matrix metrics (kept for TNR/NPV, which scikit-learn lacks) equal scikit-learn's."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support
    from sklearn.metrics import confusion_matrix as sk_confusion

    from emclassify.metrics import confusion_matrix, score

    import warnings

    warnings.simplefilter("ignore")  # scikit-learn warns about classes absent from y_true; that is the case tested
    k, pairs = case
    y, p = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    classes = [f"c{i}" for i in range(k)]
    assert (confusion_matrix(y, p, k) == sk_confusion(y, p, labels=list(range(k)))).all()
    s = score(y, p, classes)
    prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=list(range(k)), zero_division=0)
    for i, c in enumerate(classes):
        assert s["per_class"][c]["ppv"] == pytest.approx(prec[i])
        assert s["per_class"][c]["tpr"] == pytest.approx(rec[i])
        assert s["per_class"][c]["f1"] == pytest.approx(f1[i])
        assert s["per_class"][c]["support"] == support[i]
    present = sorted(set(y) | set(p))
    assert s["macro_f1"] == pytest.approx(f1_score(y, p, labels=present, average="macro", zero_division=0))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert s["accuracy"] == pytest.approx(float(np.mean(y == p)))
