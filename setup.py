from setuptools import setup, find_packages

setup(
    name="refsnn",
    version="0.1.0",
    description="Framework-free exact reference implementation for training spiking neural networks",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Only the package refsnn is installed. Two of its subpackages live in top-level folders of
    # the repository: data/ (the shipped data sets) is installed as refsnn.data_files, so that
    # refsnn.data finds them after a non-editable install too, and verify/ as refsnn.verify
    # (`python -m refsnn.verify`, `refsnn verify`; `python -m verify` from a checkout). bench/
    # and experiments/ are repository tools, run from a checkout, and are not installed.
    packages=find_packages(include=["refsnn", "refsnn.*"]) + ["refsnn.data_files", "refsnn.verify"],
    package_dir={"refsnn.data_files": "data", "refsnn.verify": "verify"},
    package_data={"refsnn.data_files": ["*.gz", "README.md"]},
    install_requires=["numpy", "numba>=0.68", "scipy", "tqdm", "threadpoolctl", 'tomli; python_version < "3.11"'],
    extras_require={  # README.md, "Dependencies, and why", gives the reason for each
        "test": ["pytest", "pytest-xdist", "hypothesis"],
        "verify": ["torch==2.13.0", "spikingjelly==2.0.0", "snntorch", "safetensors", "nir==1.0.8", "nirtorch==2.6",
                   "norse==1.1.0"],
        "plot": ["matplotlib"],
        "experiments": ["matplotlib"],
        "nir": ["nir==1.0.8"],
        "events": ["h5py"],
        "distributed": ["mpi4py", "mpich"],
    },
    entry_points={"console_scripts": ["refsnn=refsnn.cli:main"]},
)
