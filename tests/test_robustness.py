"""The attacks of issue 16 (benchmarks/robustness.py holds the list): each must end with its documented exit code,
one line that names the thing and why, no traceback, every earlier file unchanged, and no temporary file or stray
process left behind."""
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("robustness", ROOT / "benchmarks" / "robustness.py")
robustness = importlib.util.module_from_spec(_spec)
sys.modules["robustness"] = robustness  # its dataclasses look their module up
_spec.loader.exec_module(robustness)


@pytest.fixture(scope="module")
def base():
    """A folder that the permission attacks, run as nobody where the tests run as root, can enter."""
    folder = Path(tempfile.mkdtemp(prefix="vc-robustness-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.chmod(folder, 0o755)
    checkpoint = robustness.tiny_checkpoint(folder / "tiny.pt")
    os.chmod(checkpoint, 0o644)
    yield folder, checkpoint
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("attack", [pytest.param(a, id=a.name) for a in robustness.ATTEMPTS])
def test_attack_is_refused_or_survived(attack, base):
    folder, checkpoint = base
    work = folder / f"{robustness.ATTEMPTS.index(attack):03d}"
    work.mkdir()
    shutil.copyfile(checkpoint, work / "tiny.pt")
    outcome = robustness.run_attempt(attack, work, work / "tiny.pt")
    assert outcome.ok, f"{attack.name}: {'; '.join(outcome.problems)} (exit {outcome.code}: {outcome.message})"


def test_there_are_at_least_60_attacks_of_each_kind():
    names = [a.name for a in robustness.ATTEMPTS]
    assert len(names) >= 60 and len(set(names)) == len(names)
    for kind in ("source:", "target:", "--", "output", "checkpoint:", "kill -9", "full disk", "prepare:"):
        assert any(kind in n for n in names), kind
