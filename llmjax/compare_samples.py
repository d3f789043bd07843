"""`python -m llmjax.compare_samples`: llmjax and Hugging Face samples side by side (the program is `llmjax.cli.compare_samples`)."""

from llmjax.cli import compare_samples as program

if __name__ == "__main__":
  program.run()
