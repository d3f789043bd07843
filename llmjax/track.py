"""`python -m llmjax.track`: finished runs into MLflow (the program is `llmjax.cli.track`)."""

from llmjax.cli import track as program

if __name__ == "__main__":
  program.run()
