"""llm_jax: a JAX/Flax research codebase for language models."""

import setuptools

setuptools.setup(
    name="llm_jax",
    version="0.1.0",
    description="Encoder, decoder and encoder-decoder language models in JAX/Flax, "
    "with sharded training, pretraining objectives and Hugging Face interop.",
    packages=setuptools.find_packages(include=["llm_jax", "llm_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12.8",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.9",
        "ml-collections>=1.0",
        "grain>=0.2.12",
        "sentencepiece>=0.2",
        "tokenizers>=0.21",
        "numpy>=1.26",
        "absl-py",
        "tqdm",
        "tensorboardX",
        "sacrebleu",
        "rouge-score",
        "portpicker",
        "matplotlib",
        "jinja2",
        "pyyaml",
        "scipy",
    ],
    extras_require={
        # torch is pinned to the CPU build that these machines install locally; on a GPU box
        # install the CUDA build of torch first (see README), the pin is then satisfied.
        "hf": ["torch==2.13.0", "transformers>=4.46", "safetensors", "peft>=0.13", "trl>=1.0",
               "lm-eval>=0.4.5", "sentence-transformers>=3.0", "faiss-cpu"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient", "nbformat", "ipykernel", "scikit-learn", "scipy"],
    },
)
