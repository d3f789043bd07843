"""`python -m llmjax.export`: a run as a Hugging Face GPT-2 directory (the program is `llmjax.cli.export`)."""

from llmjax.cli import export as program

if __name__ == "__main__":
  program.run()
