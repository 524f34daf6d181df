"""Generates the Python stubs for every proto under protos/fanbank into shared/gen.

The stubs are committed (CONVENTIONS.md) and a test regenerates them into a scratch folder and
compares, so a proto edited without `make gen` fails CI. protoc writes absolute imports
(`from fanbank.wallet.v1 import ...`); they are rewritten to `shared.gen.fanbank...` so the stubs
live inside our own package rather than claiming a top-level `fanbank` module.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
PROTOS = REPO / "protos"
GEN_PACKAGE = "shared.gen"
_IMPORT = re.compile(r"^(from|import) fanbank\.", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted((PROTOS / "fanbank").rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTOS)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in sorted(out_dir.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        rewritten = _IMPORT.sub(lambda m: f"{m.group(1)} {GEN_PACKAGE}.fanbank.", text)
        if rewritten != text:
            path.write_text(rewritten)
    for folder in [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]:
        if folder.name == "__pycache__":
            continue
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text("")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "shared" / "gen"
    generate(out)


if __name__ == "__main__":
    main()
