"""llmjax: a JAX/Flax NNX toolkit for language-model research."""

__version__ = "0.1.0"
