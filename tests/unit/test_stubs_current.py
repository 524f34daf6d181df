"""The committed stubs in shared/gen must be exactly what `make gen` produces from protos/."""

import filecmp
from pathlib import Path

from shared.codegen import REPO, generate


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_stubs_match_protos(tmp_path):
    generate(tmp_path)
    committed = REPO / "shared" / "gen"
    assert _files(tmp_path) == _files(committed), "run `make gen`: stub files differ from the protos"
    stale = [str(p) for p in _files(tmp_path) if not filecmp.cmp(tmp_path / p, committed / p, shallow=False)]
    assert not stale, f"run `make gen`: stale stubs {stale}"
