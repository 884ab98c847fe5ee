"""Data pipelines of seekhelp: seeds, privacy injection, teacher dialogues (run from the checkout)."""
