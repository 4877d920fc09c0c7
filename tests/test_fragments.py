import numpy as np
import pytest

from autointerp.dictionaries.sources import load_dictionary
from autointerp.harvest.store import ActivationStore
from autointerp.scoring import fragments as fr
from autointerp.scoring.fragments import FragmentConfig, collect_fragments, token_decoder
from tests.support.data import PLANTED_WORDS, make_planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    store, dict_path, tokenizer = make_planted(tmp_path_factory.mktemp("planted"), n_noise=3)
    return ActivationStore(store), load_dictionary(dict_path), tokenizer


def test_samples_features_with_enough_nonzero_fragments(planted):
    store, dictionary, _ = planted
    fs = collect_fragments(dictionary, store, FragmentConfig(n_features=150))
    n_live = len(PLANTED_WORDS) + 3
    assert fs.n_eligible == n_live and fs.n_skipped == dictionary.n_features - n_live
    assert [f.feature for f in fs.features] == list(range(n_live))
    few = collect_fragments(dictionary, store, FragmentConfig(n_features=2, seed=1))
    assert len(few.features) == 2 and {f.feature for f in few.features} < set(range(n_live))


def test_top_and_random_fragments(planted):
    store, dictionary, tokenizer = planted
    cfg = FragmentConfig()
    fs = collect_fragments(dictionary, store, cfg)
    for ff in fs.features:
        maxes = [max(f.activations) for f in ff.top]
        assert len(ff.top) == 20 and maxes == sorted(maxes, reverse=True) and maxes[-1] > 0
        n_random = min(20, ff.n_nonzero - 10)  # never one of the 10 top fragments used
        assert len(ff.random) == n_random and len({f.index for f in ff.random}) == n_random
        assert all(max(f.activations) > 0 for f in ff.random)  # drawn among non-zero ones
        shown = {f.index for f in ff.explainer_fragments()}
        scoring = ff.scoring_fragments()
        assert len(shown) == 5 and len(scoring) == 10
        assert shown.isdisjoint(f.index for f in scoring)
        assert len({f.index for f in scoring}) == 10
    # Per-token activations and tokens are those of the store and the dictionary.
    f = fs.features[0].top[0]
    chunk = next(c for c in store.eval_chunks(1) if c.first_fragment == f.index)
    expected = dictionary.encode(chunk.acts[0])[:, fs.features[0].feature]
    assert np.allclose(f.activations, expected.numpy())
    assert list(f.tokens) == [tokenizer.decode([i]) for i in chunk.tokens[0]]


def test_random_from_all_includes_fragments_where_the_feature_is_zero(planted):
    store, dictionary, _ = planted
    fs = collect_fragments(dictionary, store, FragmentConfig(random_from="all"))
    sparse = [ff for ff in fs.features if ff.n_nonzero < store.n_eval_fragments]
    assert sparse, "the planted store has a feature that is zero in some fragments"
    assert any(max(f.activations) == 0 for ff in sparse for f in ff.random)


def test_sample_does_not_depend_on_chunking(planted, monkeypatch):
    store, dictionary, _ = planted
    a = collect_fragments(dictionary, store, FragmentConfig(seed=5))
    monkeypatch.setattr(fr, "ENCODE_BUDGET", 64 * dictionary.n_features * 3)  # 3 fragments a chunk
    b = collect_fragments(dictionary, store, FragmentConfig(seed=5))
    assert a == b
    c = collect_fragments(dictionary, store, FragmentConfig(seed=6))
    assert [f.index for f in c.features[0].random] != [f.index for f in a.features[0].random]


def test_round_trip_through_json(planted):
    store, dictionary, _ = planted
    fs = collect_fragments(dictionary, store, FragmentConfig(n_features=3))
    import json
    assert fr.fragment_set_from_json(json.loads(json.dumps(fr.fragment_set_to_json(fs)))) == fs
    # sets stored by earlier versions (every fragment in full) still read the same
    first = {"n_features": fs.n_features, "n_eligible": fs.n_eligible, "n_skipped": fs.n_skipped,
             "n_fragments": fs.n_fragments,
             "features": [[ff.feature, ff.n_nonzero, *([[f.index, list(f.tokens), list(f.activations)]
                                                       for f in part] for part in
                                                      (ff.top, ff.random, ff.held_out, ff.negatives))]
                          for ff in fs.features]}
    assert fr.fragment_set_from_json(json.loads(json.dumps(first))) == fs
    assert any(a and a != 1 for ff in fs.features for f in ff.top for a in f.activations)


def test_dense_sparse_and_silent_fragments_round_trip():
    import json

    from autointerp.types import Fragment
    toks = ("a", " b", "\tc", "é")
    dense = Fragment(toks, (0.5, 0.25, 1e-7, 3.0), 4)  # a PCA direction's: written in full
    silent = Fragment(toks[:2], (0.0, 0.0), 2)
    sparse = Fragment(toks, (0.0, 0.0, float(np.float32(0.1)), 0.0), 9)
    loose = [Fragment(toks[i:], (1.0,) * (4 - i)) for i in range(2)]  # index -1: no store's
    other = Fragment(("z",) * 4, (0.0,) * 4, 9)  # index 9 with other tokens: kept as they are
    fs = fr.FragmentSet((fr.FeatureFragments(7, 3, (dense, sparse), (sparse,), (dense,), (silent,)),
                         fr.FeatureFragments(8, 1, (sparse, *loose), (other,), (), (silent,))),
                        16, 2, 0, 12)
    stored = json.loads(json.dumps(fr.fragment_set_to_json(fs)))
    assert fr.fragment_set_from_json(stored) == fs
    assert stored["features"][0][2] == [[4, [0.5, 0.25, 1e-7, 3.0]], [9, [[2, float(np.float32(0.1))]]]]
    assert stored["tokens"] == {"4": list(toks), "9": list(toks), "2": ["a", " b"]}


def test_config_is_validated():
    with pytest.raises(ValueError):
        FragmentConfig(random_from="some")
    with pytest.raises(ValueError):
        FragmentConfig(min_nonzero=10)


def test_token_decoder_byte_level_and_sentencepiece(planted):
    _, _, tokenizer = planted
    ids = tokenizer("the cat 🙂")["input_ids"]
    decoded = token_decoder(tokenizer)(np.array(ids))
    assert len(decoded) == len(ids) and "".join(decoded).startswith("the cat")
    assert "\ufffd" in "".join(decoded) or "🙂" in "".join(decoded)  # partial bytes stay visible

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "▁the": 1, "<0x0A>": 2, "cat": 3}
    sp = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "<unk>")))
    assert token_decoder(sp)(np.array([1, 2, 3])) == [" the", "\n", "cat"]


def test_wide_dictionary_memory_is_bounded(planted):
    store, _, _ = planted
    assert fr._chunk_size(store, 16384) * 64 * 16384 <= fr.ENCODE_BUDGET
