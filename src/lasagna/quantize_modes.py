"""The LLM quantizations lasagna loads through bitsandbytes, by name (a module of its own: the command line lists
them without importing torch)."""

MODES = ("8bit", "4bit")
"""8bit: LLM.int8 (bitsandbytes Linear8bitLt); 4bit: NF4 (Linear4bit)."""
