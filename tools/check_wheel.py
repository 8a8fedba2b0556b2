"""Check a non-editable install of speedpose: every named config must come with it (CI runs this, see .ci/run).

Install the wheel apart from the checkout and run this from outside it, with that folder first on the path::

    pip install --no-deps --target /tmp/site dist/speedpose-*.whl
    cd /tmp && PYTHONPATH=/tmp/site python /path/to/tools/check_wheel.py /tmp/site smoke standin_cpu ...

Exit code 0 when speedpose is imported from SITE and each NAME resolves to a config installed under SITE that loads
with its schema; 1 otherwise, saying which.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def check(site: Path, names: list[str]) -> list[str]:
    """The problems found (empty: the install is fine)."""
    import speedpose

    site = site.resolve()
    package = Path(speedpose.__file__).resolve()
    if site not in package.parents:
        return [f"speedpose was imported from {package}, not from the install in {site}"]
    from speedpose.config import load_config, resolve_config, shipped_configs
    from speedpose.errors import SpeedposeError

    try:
        shipped = shipped_configs()
    except SpeedposeError as exc:
        return [str(exc)]
    problems = []
    missing = sorted(set(names) - set(shipped))
    if missing:
        problems.append(f"configs missing from the install: {', '.join(missing)}")
    for name in sorted(set(names) - set(missing)):
        try:
            path = resolve_config(name, "speedplus").resolve()
            cfg = load_config(path)
        except SpeedposeError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if site not in path.parents:
            problems.append(f"{name}: resolved to {path}, outside the install")
        else:
            print(f"{name}: {path.relative_to(site)} (task {cfg.task})")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("site", type=Path, help="the folder the wheel was installed into (pip install --target)")
    ap.add_argument("names", nargs="+", help="config names the install must ship (the stems of configs/*.yaml)")
    args = ap.parse_args(argv)
    problems = check(args.site, args.names)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
