"""Table columns: a label with its unit and a rounding read from the column's name, for every figure of
the report's step rows and for figures it does not have yet."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.tables import Shown, shown
from stampede.report import ROW_COLUMNS


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("measured_s", np.float64, Shown("Measured (s)", "number", "%.1f")),
        ("ttft_p99_ms", np.float64, Shown("TTFT p99 (ms)", "number", "%,.1f")),
        ("network_and_queue_p50_ms", np.float64, Shown("Network and queue p50 (ms)", "number", "%,.1f")),
        ("output_tokens_per_s", np.float64, Shown("Output tokens/s", "number", "%,.2f")),
        ("request_rate_per_s", np.float64, Shown("Request rate (requests/s)", "number", "%,.2f")),
        ("error_rate", np.float64, Shown("Error rate", "percent", "percent")),
        ("errors", np.int64, Shown("Errors", "number", "%,d")),
        ("saturated", np.bool_, Shown("Saturated", "checkbox")),
        ("load", np.float64, Shown("Load", "number", "%g", "Concurrent users, or requests/s in open loop")),
        ("started_at", None, Shown("Started (UTC)", "datetime", "YYYY-MM-DD HH:mm:ss")),
        ("target", np.object_, Shown("Target")),
    ],
)
def test_a_column_is_labelled_with_its_unit_and_rounded_by_it(name: str, dtype: object, expected: Shown) -> None:
    assert shown(name, np.dtype(dtype) if dtype is not None else None) == expected


def test_a_figure_the_report_adds_is_labelled_from_its_name_alone() -> None:
    # Figures other changes add to the step rows: nothing in the dashboard names them.
    assert shown("reconnects", np.dtype(np.int64)) == Shown("Reconnects", "number", "%,d")
    assert shown("in_flight_p99", np.dtype(np.float64)).label == "In flight p99"
    assert shown("arrival_output_tokens_per_s", np.dtype(np.float64)) == Shown(
        "Arrival output tokens/s", "number", "%,.2f"
    )


def test_every_column_of_the_step_rows_reads_as_words_not_as_its_name() -> None:
    labels = [shown(name).label for name in ROW_COLUMNS]
    assert not [label for label in labels if "_" in label]
    assert len(set(labels)) == len(labels)
