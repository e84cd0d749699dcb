"""Check the direction of lfkit's imports (``.importlinter``) and that no module imports itself back.

The feature folders live at the top of the checkout and install under ``lfkit.*``
(pyproject's package-dir), which import-linter cannot see in a checkout; so the
sources are first laid out as installed in a temporary folder. Then:

- import-linter's contracts (``.importlinter``): the CLI above the features above the core;
- no circle among lfkit's modules, whether the import is at module level or inside a
  function (grimp's graph holds both).

Usage: python scripts/lint_imports.py [--root CHECKOUT]; exit 0 when both hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli that pytest requires there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def lay_out(root: Path, target: Path) -> Path:
    """Copy the Python sources of ``root`` into ``target`` as pip would install them."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        dest = target.joinpath(*package.split("."))
        for source in (root / folder).rglob("*.py"):
            relative = source.relative_to(root / folder)
            if package == "lfkit" and relative.parts[0] in {p.split(".")[1] for p in mapping if p != "lfkit"}:
                continue
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, dest / relative)
    return target


def cycles(graph, modules: set[str]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start) & modules)))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def main() -> int:
    if os.environ.get("LFKIT_AUTOLOAD") != "0":
        # The installed lfkit must not be imported (by its .pth) before the laid-out copy is read.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "LFKIT_AUTOLOAD": "0"})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    root = parser.parse_args().root.resolve()
    with tempfile.TemporaryDirectory(prefix="lfkit-imports-") as tmp:
        lay_out(root, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp, "LFKIT_AUTOLOAD": "0"}
        linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
        contracts = subprocess.run([linter, "--no-cache", str(root / ".importlinter")], cwd=tmp, env=env)
        sys.path.insert(0, tmp)
        import grimp

        graph = grimp.build_graph("lfkit", cache_dir=None)
        if not graph.find_children("lfkit") >= {"lfkit.cli", "lfkit.recipes", "lfkit.launching"}:
            print(f"the laid-out lfkit was not the one analysed ({sorted(graph.find_children('lfkit'))})")
            return 1
        circles = cycles(graph, set(graph.modules))
    for group in circles:
        print(f"import circle of {len(group)} modules: {', '.join(group)}")
    if not circles:
        print("no import circle among lfkit's modules")
    return 1 if contracts.returncode or circles else 0


if __name__ == "__main__":
    sys.exit(main())
