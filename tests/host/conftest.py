"""Fixtures of the host tests."""

import shutil

import pytest


@pytest.fixture
def version_dir(model_repository, tmp_path):
    """A private copy of the built FACILE version folder (TMP/facile/1), to add xclbins to."""
    copy = tmp_path / "facile" / "1"
    shutil.copytree(model_repository / "facile" / "1", copy)
    return copy
