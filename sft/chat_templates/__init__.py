"""Chat templates for training the SLM, and the rule that picks one for a tokenizer.

`chatml_generation.jinja` is ChatML with `{% generation %}` markers around what the assistant writes, so TRL's
`assistant_only_loss` can keep the loss on the SLM's turns. Whatever template training used is saved with the
tokenizer, so inference renders the same text.
"""

import logging
from pathlib import Path

from sft import SFTInputError

log = logging.getLogger(__name__)
CHATML_TEMPLATE = Path(__file__).parent / "chatml_generation.jinja"


def prepare_tokenizer(model_path: str, template_path: str | None = None):
    """Load the tokenizer and give it a template with generation markers: `template_path` if given, else the
    model's own if it has markers, else our ChatML one (for ChatML vocabularies such as SmolLM2's and Qwen's)."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import has_generation_markers

    try:
        tok = AutoTokenizer.from_pretrained(model_path)
    except OSError as e:
        raise SFTInputError(f"{model_path}: cannot load the tokenizer ({str(e).splitlines()[0]})") from e
    if template_path:
        if not Path(template_path).is_file():
            raise SFTInputError(f"chat_template_path: {template_path}: no such template file")
        tok.chat_template = Path(template_path).read_text(encoding="utf-8")
    elif not tok.chat_template or not has_generation_markers(tok.chat_template):
        if "<|im_start|>" not in tok.get_vocab():
            raise SFTInputError(f"{model_path}: not a ChatML vocabulary and no generation markers; "
                                "set chat_template_path")
        log.info("using %s (the model's template has no generation markers)", CHATML_TEMPLATE.name)
        tok.chat_template = CHATML_TEMPLATE.read_text(encoding="utf-8")
    if not has_generation_markers(tok.chat_template):
        raise SFTInputError(f"chat_template_path: {template_path}: no {{% generation %}} markers")
    return tok
