"""The Dictionary contract and format, readers for other tools' files, evaluation."""
