"""`python -m llmjax.assets`: the offline assets (the program is `llmjax.cli.assets`)."""

from llmjax.cli import assets as program

if __name__ == "__main__":
  program.run()
