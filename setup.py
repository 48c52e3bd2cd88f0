"""attn_zoo: a JAX/Flax research framework for efficient self-attention."""
from setuptools import find_packages, setup

setup(
    name="attn_zoo",
    version="0.1.0",
    description="Efficient self-attention variants in JAX, one mask contract, LRA-style training.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["attn_zoo", "attn_zoo.*"]),
    package_data={"attn_zoo.kernels": ["*.cc"]},
    python_requires=">=3.11",
    install_requires=[
        # jax 0.10.x is the newest on Python 3.11; newer releases stay allowed for 3.12+.
        "jax>=0.6.0",
        "flax>=0.11.0",
        "optax>=0.2.4",
        "chex>=0.1.88",
        "numpy>=1.26",
        "ml_collections>=0.1.1",
        "absl-py>=2.0",
        "orbax-checkpoint>=0.11.0",
        "matplotlib>=3.8",
        # OpenBLAS for the fused CPU attention kernel (attn_zoo/kernels), compiled on first use.
        "scipy-openblas32>=0.3.27",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5"],
        # Optional baseline for the benchmark (PyTorch's CPU flash kernel); never required.
        "torch": ["torch>=2.5"],
        "tensorboard": ["tensorboardX>=2.6"],
    },
    entry_points={"console_scripts": ["attn-zoo=attn_zoo.cli:main"]},
)
