"""Maps each top-level folder of the repository to a subpackage of the `insitem` namespace.

pyproject.toml holds the metadata and the package data; this file only computes the package
list, because setuptools' declarative `packages.find` cannot prefix found packages with
`insitem.`. Folders without `__init__.py` that hold package data (protocols/library, the shipped
protocols) are found as namespace packages, so setuptools lists them explicitly and installs
their data without warning.
"""

from setuptools import find_namespace_packages, setup

TOP_LEVEL = ["drivers", "simulators", "acquisition", "protocols", "analysis", "api", "cli"]

packages: list[str] = []
for top in TOP_LEVEL:
    packages.append(f"insitem.{top}")
    packages += [f"insitem.{top}.{sub}" for sub in find_namespace_packages(top, exclude=["*__pycache__*"])]

setup(packages=packages, package_dir={f"insitem.{top}": top for top in TOP_LEVEL})
