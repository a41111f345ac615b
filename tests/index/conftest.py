import pytest


class CharTokenizer:
    """Byte-level stand-in for a Hugging Face tokenizer: ids are character codes (< 256 here)."""

    name_or_path = "char-tokenizer"
    all_special_tokens = ["<eos>"]

    def __init__(self, offset: int = 0):
        self.offset = offset

    def get_vocab(self):
        return {chr(i): i + self.offset for i in range(256)} | {"<eos>": 256}

    def __len__(self):
        return 257

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[(ord(c) % 256) + self.offset for c in t] for t in texts]}

    def decode(self, ids):
        return "".join(chr(i - self.offset) for i in ids)


@pytest.fixture
def tok():
    return CharTokenizer()
