"""`python -m llmjax.main`: training and every other job (the program is `llmjax.cli.main`)."""

from llmjax.cli import main as program

if __name__ == "__main__":
  program.run()
