"""Maps each top-level folder of the repository to a subpackage of the `insitem` namespace.

pyproject.toml holds the metadata; this file only computes the package list, because
setuptools' declarative `packages.find` cannot prefix found packages with `insitem.`.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ["drivers", "simulators", "acquisition", "protocols", "analysis"]

packages: list[str] = []
for top in TOP_LEVEL:
    packages.append(f"insitem.{top}")
    packages += [f"insitem.{top}.{sub}" for sub in find_packages(top)]

setup(packages=packages, package_dir={f"insitem.{top}": top for top in TOP_LEVEL})
