"""delia: Diversity-Enhanced Learning for Instruction Adaptation (arXiv 2408.10841) as a toolkit."""

__version__ = "0.1.0"
