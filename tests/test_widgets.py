import numpy as np

from motor.neighbours import search_items, shared_token_neighbours, vector_neighbours
from motor.widgets import TokenExplorer


def test_search_and_neighbours_hand_example():
    texts = ["red glove", "blue glove", "red hat", "tape"]
    assert search_items(texts, "GLOVE") == [0, 1]
    assert search_items(texts, "red glove") == [0]
    assert search_items(texts, "glove red") == [0]  # no phrase hit: every word
    assert search_items(texts, "2") == [2]
    ids = {"text": np.array([[1, 2], [1, 2], [1, 3], [4, 5]]), "image": np.array([[0], [9], [0], [0]])}
    nb = shared_token_neighbours(ids, 0, top=3)
    assert nb.item.tolist() == [1, 2, 3] and nb.shared.tolist() == [2, 2, 1]
    vn = vector_neighbours(np.array([[1.0, 0], [0.9, 0.1], [0, 1], [-1, 0]]), 0, top=2)
    assert vn.item.tolist() == [1, 2]


def test_explorer_callbacks_update_tables_and_widgets(small_synth):
    ids = {"text": np.random.default_rng(0).integers(0, 8, size=(small_synth.n_items, 3))}
    vec = np.random.default_rng(1).normal(size=(small_synth.n_items, 4))
    ex = TokenExplorer(small_synth, ids, {"MOTOR": vec}, top=4)
    box = ex.widget(initial_query="(cluster 3)")
    query, pick, out = box.children
    assert ex.matches and all("(cluster 3)" in small_synth.item_text[i] for i in ex.matches)
    assert pick.value == ex.matches[0] and f"item {ex.matches[0]}" in out.value
    query.value = "(cluster 5)"  # typing updates the picker...
    assert [v for _, v in pick.options] == ex.matches
    pick.value = ex.matches[1]  # ...and picking updates the neighbour tables shown
    assert ex.item == ex.matches[1]
    assert f"item {ex.matches[1]}" in out.value
    assert len(ex.tables["shared tokens"]) == 4 and len(ex.tables["nearest by MOTOR vector"]) == 4
    assert ex.tables["tokens"].loc["text"].tolist() == ids["text"][ex.item].tolist()
