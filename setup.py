"""Maps the top-level folders to the `turngym.*` namespace (docs/design.md, "Layout").

Everything else about the distribution is in pyproject.toml. Every folder below the five
package folders becomes a subpackage (data folders as namespace packages), so a new subpackage
needs no edit here.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
FOLDERS = {"turngym": "turngym", "envs": "turngym.envs", "agents": "turngym.agents",
           "trainers": "turngym.trainers", "tools": "turngym.tools", "sandboxes": "turngym.sandboxes"}



def _importable(rel: Path) -> bool:
    return all(part.isidentifier() and part != "__pycache__" for part in rel.parts)


package_dir, packages = {}, []
for folder, name in FOLDERS.items():
    package_dir[name] = folder
    # Folders without an __init__.py (data/ beside an environment) are listed too: Python can
    # import them as namespace packages, and setuptools warns about any it is not told of.
    folders = [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]
    for path in sorted(folders):
        rel = path.relative_to(ROOT / folder)
        if _importable(rel):
            packages.append(".".join([name, *rel.parts]) if rel.parts else name)

setup(package_dir=package_dir, packages=packages)
