"""`python -m llmjax.recite`: how much of its book a run recites (the program is `llmjax.cli.recite`)."""

from llmjax.cli import recite as program

if __name__ == "__main__":
  program.run()
