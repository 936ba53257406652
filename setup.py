"""Package discovery for setuptools (the metadata is in pyproject.toml).

The repository root *is* the ``polydiff`` package (core/ -> polydiff.core, modalities/image -> polydiff.
modalities.image, ...): every folder with an ``__init__.py`` below the root is found and mapped under
``polydiff``, so a new modality folder ships without editing a list. Tests and build outputs are left out.
"""

from setuptools import find_packages, setup

EXCLUDE = ["tests", "tests.*", "build", "build.*", "dist", "dist.*"]

setup(
    packages=["polydiff"] + [f"polydiff.{name}" for name in find_packages(".", exclude=EXCLUDE)],
    package_dir={"polydiff": "."},
)
