"""Supervised fine-tuning of the SLM (run from the checkout: `python -m sft.train --config RECIPE`)."""


from seekhelp.errors import SeekhelpError


class SFTInputError(SeekhelpError, ValueError):
    """Bad input the user can fix; the message is one line naming the file or field."""
