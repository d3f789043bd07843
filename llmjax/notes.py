"""`python -m llmjax.notes`: notes corpora (the program is `llmjax.cli.notes`)."""

from llmjax.cli import notes as program

if __name__ == "__main__":
  program.run()
