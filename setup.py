"""Maps the top-level folders to the `turngym.*` namespace (DESIGN.md, "Layout").

Everything else about the distribution is in pyproject.toml. Every folder below the five
package folders that holds an ``__init__.py`` becomes a subpackage, so a new subpackage needs
no edit here.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
FOLDERS = {"turngym": "turngym", "envs": "turngym.envs", "agents": "turngym.agents",
           "trainers": "turngym.trainers", "tools": "turngym.tools", "sandboxes": "turngym.sandboxes"}

package_dir, packages = {}, []
for folder, name in FOLDERS.items():
    package_dir[name] = folder
    for init in sorted((ROOT / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT / folder)
        packages.append(".".join([name, *rel.parts]) if rel.parts else name)

setup(package_dir=package_dir, packages=packages)
