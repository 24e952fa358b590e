"""Fixtures of the dashboard tests: a migrated SQLite store that the dashboard is configured to read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st

from stampede.db import upgrade
from stampede.settings import get_settings
from tests.unit.dashboard.dashboard_fixtures import Seeder


@pytest.fixture
def seeder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seeder]:
    """A migrated, empty SQLite store that the dashboard is configured to read."""
    url = f"sqlite:///{tmp_path / 'stampede.db'}"
    upgrade(url)
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", url)
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield Seeder(url)
    get_settings.cache_clear()
    st.cache_data.clear()
