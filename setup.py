from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "nequip_flash_ace" / "_version.py").read_text(), version)

setup(
    name="nequip-flash-ace",
    version=version["__version__"],
    description="Flash-ACE: smooth neighbour attention on an Atomic Cluster Expansion backbone, as a NequIP extension",
    long_description=(Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nequip_flash_ace", "nequip_flash_ace.*"]),
    install_requires=[
        "nequip>=0.19,<0.20",
        "e3nn>=0.6.0,<0.7.0",
        "ase",
        "pyyaml",
        "torch>=2.10",  # AOTInductor deployment; the host has no TorchScript route from 2.10 on
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "scipy", "nequip-allegro"],
        "benchmark": ["nequip-allegro"],
    },
    entry_points={
        "nequip.extension": ["init_always = nequip_flash_ace"],
    },
    zip_safe=False,
)
