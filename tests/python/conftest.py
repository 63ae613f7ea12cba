# pytest setup for tests/python: ctest runs them with PYTHONPATH=<build>/python and
# NABLA_SOURCE_DIR=<source>; by hand: PYTHONPATH=build/python /usr/bin/python3 -m pytest tests/python
import os
import pathlib

import pytest

SOURCE = pathlib.Path(os.environ.get("NABLA_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))


@pytest.fixture
def samples():
    return SOURCE / "samples"
