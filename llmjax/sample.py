"""`python -m llmjax.sample`: text from a trained run or GPT-2 (the program is `llmjax.cli.sample`)."""

from llmjax.cli import sample as program

if __name__ == "__main__":
  program.run()
