from setuptools import setup, find_packages

setup(
    name="refsnn",
    version="0.1.0",
    description="Framework-free exact reference implementation for training spiking neural networks",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["refsnn", "refsnn.*", "verify", "verify.*", "bench", "bench.*"])
    + ["refsnn.data_files"],
    # The shipped data sets live in the top-level data/ folder; install them as the package
    # refsnn.data_files so that refsnn.data finds them after a non-editable install too.
    package_dir={"refsnn.data_files": "data"},
    package_data={"refsnn.data_files": ["*.gz", "README.md"]},
    install_requires=["numpy", "numba", "scipy", "tqdm", "threadpoolctl", 'tomli; python_version < "3.11"'],
    extras_require={
        "test": ["pytest", "hypothesis"],
        "verify": ["torch==2.13.0", "spikingjelly==2.0.0", "snntorch", "safetensors"],
        # only the experiment scripts (experiments/neurons.py) plot, e.g. temporal_gradients.png
        "experiments": ["matplotlib"],
    },
    entry_points={"console_scripts": ["refsnn=refsnn.cli:main"]},
)
