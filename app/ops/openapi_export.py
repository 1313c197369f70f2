"""Write the app's OpenAPI document: `python -m app.ops.openapi_export` or `speech-gateway openapi`.

The committed `openapi/openapi.json` is what clients, generators and the fuzz tests read; a test
regenerates it and fails when the code and the file disagree (`--check` does the same here).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path

DEFAULT_PATH = Path("openapi") / "openapi.json"
REGENERATE = "python -m app.ops.openapi_export  (or: speech-gateway openapi)"


def _plain(value: object) -> object:
    # Litestar keeps numeric schema bounds it parsed as Decimal; JSON has only numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot write {type(value).__name__} into the OpenAPI document")


def render() -> str:
    """The document of an app built with default settings (routes do not depend on them), as stable JSON."""
    from app.main import create_app
    from app.settings import Settings

    schema = create_app(Settings()).openapi_schema.to_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False, default=_plain) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.ops.openapi_export", description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    args = parser.parse_args(argv)
    return write(args.output, check=args.check)


def write(path: Path, *, check: bool = False) -> int:
    text = render()
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        if current != text:
            print(f"{path} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(json.loads(text)['paths'])} paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
