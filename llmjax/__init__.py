"""llmjax: a JAX/Flax NNX toolkit for language-model research."""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy so that `python -m llmjax.main` can set up devices before JAX is imported.
  if name in ("Trainer", "Sampler"):
    from llmjax import api  # pylint: disable=import-outside-toplevel

    return getattr(api, name)
  raise AttributeError(name)
