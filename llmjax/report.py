"""`python -m llmjax.report`: run comparison tables and plots (the program is `llmjax.cli.report`)."""

from llmjax.cli import report as program

if __name__ == "__main__":
  program.run()
