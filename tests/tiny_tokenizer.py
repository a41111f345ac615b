"""A word-level tokenizer with a chat template for the tiny random models of helpers.py.

Ids match ``tiny_model()``: 0 = ``<s>`` (bos), 1 = ``<unk>``, 2 = ``<pad>``, 95 = ``</s>`` (eos),
3..5 the chat roles, 6..94 the words ``w6`` .. ``w94``; decoded text is the words joined by spaces.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = ("{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
                 "{% if add_generation_prompt %}<s> assistant {% endif %}")


def tiny_tokenizer(vocab: int = 96, word: str = "w"):
    """A ``PreTrainedTokenizerFast`` of ``vocab`` ids (another ``word`` prefix: another tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "<unk>", "<pad>", "user", "assistant", "system"] + [f"{word}{i}" for i in range(6, vocab - 1)]
    words.append("</s>")
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins the words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tiny_chat_model(folder: Path, model) -> Path:
    """Save ``model`` (a tiny random model) with :func:`tiny_tokenizer` as a transformers folder."""
    model.save_pretrained(folder)
    tiny_tokenizer(model.config.vocab_size).save_pretrained(folder)
    return folder
