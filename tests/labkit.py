"""Shared by the root lab tests: skip, with the reason, where they cannot run; a lab up for a test."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from podwall.lab.cluster import lab_down, lab_up
from podwall.lab.spec import parse_lab
from podwall.lab.state import LabState


def needs_root(what: str, programs: Sequence[str]) -> pytest.MarkDecorator:
    """A module mark skipping `what` unless run as root with every program of `programs` on PATH."""
    if os.geteuid() != 0:
        return pytest.mark.skip(reason=f"root is needed for {what}")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        return pytest.mark.skip(reason=f"missing programs: {', '.join(missing)} (./dev setup installs them)")
    return pytest.mark.skipif(False, reason="root and every program are here")


@contextmanager
def running_lab(spec: Callable[[str], str], tag: str, prefix: str) -> Iterator[LabState]:
    """A lab brought up from `spec(name)` (a fresh name starting with `tag`) in a private temp
    state dir, always taken down and its dir removed, also when the test fails."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o711)
    name = tag + secrets.token_hex(4)
    try:
        yield lab_up(parse_lab(spec(name), f"{tag}.yaml"), root)
    finally:
        try:
            lab_down(name, root)  # the node namespace takes the enforcer's table and chains with it
        finally:
            shutil.rmtree(root, ignore_errors=True)
