import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp
from models import PointerNetwork
from models.pointer_network import END, RULES


def _check_valid(slots: np.ndarray, n: int, rule: str) -> None:
    """A decoded sequence is pointers into 0..n, one end and only ends after it, shaped as the rule's answers."""
    assert slots.ndim == 1 and np.all((slots >= 0) & (slots <= n)), slots
    ends = np.flatnonzero(slots == END)
    assert len(ends) > 0 and np.all(slots[ends[0] :] == END), slots
    chosen = slots[: ends[0]] - 1
    if rule == "hull":
        assert len(chosen) >= 3 and len(set(chosen.tolist())) == len(chosen)
    elif rule == "tour":
        assert sorted(chosen.tolist()) == list(range(n))
    else:
        triples = chosen.reshape(-1, 3)  # a whole number of triples
        assert np.all(np.diff(triples, axis=1) > 0)


@pytest.mark.parametrize("rule", RULES)
def test_decoded_outputs_are_valid_index_sequences(rule, getkey):
    model = PointerNetwork(rule, 16, key=getkey())
    points = jax.random.uniform(getkey(), (6, 9, 2))
    num_points = jnp.array([9, 9, 7, 5, 4, 9])
    steps = 3 * (2 * 9 - 5) + 1 if rule == "triangles" else 10
    slots = np.asarray(eqx.filter_jit(jax.vmap(lambda p, k: model.decode(p, k, steps)))(points, num_points))
    for row, n in zip(slots, np.asarray(num_points)):
        _check_valid(row, int(n), rule)


def test_teacher_forcing_on_the_decoded_sequence_reproduces_it_and_padding_changes_nothing(getkey):
    model = PointerNetwork("hull", 16, key=getkey())
    points = jax.random.uniform(getkey(), (7, 2))
    decode, forward = eqx.filter_jit(model.decode), eqx.filter_jit(model)
    slots = decode(points, 7, 8)
    logits = forward(points, 7, slots)
    steps = int(np.flatnonzero(np.asarray(slots) == END)[0]) + 1
    np.testing.assert_array_equal(jnp.argmax(logits, -1)[:steps], slots[:steps])
    padded = jnp.concatenate([points, jax.random.uniform(getkey(), (3, 2))])
    np.testing.assert_array_equal(decode(padded, 7, 8), slots)
    padded_logits = forward(padded, 7, slots)
    np.testing.assert_allclose(padded_logits[:, :8], logits, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(padded_logits[:, 8:]) < -1e8)  # padded points are never pointed to


def test_capture_intervene_and_cd_on_the_pointer_network(getkey):
    model = PointerNetwork("tour", 16, key=getkey())
    points = jax.random.uniform(getkey(), (5, 2))
    targets = jnp.array([1, 3, 2, 5, 4, 0])
    capture = jaxinterp.capture(model, "encoder.states", "pointer.scores", "decoder.hidden")
    logits, sites = eqx.filter_jit(capture)(points, 5, targets)
    assert sites["encoder.states"].shape == (6, 16)
    assert sites["pointer.scores"].shape == (6, 6) and sites["decoder.hidden"].shape == (6, 16)  # one per step
    allowed = np.asarray(logits) > -1e8
    np.testing.assert_allclose(np.asarray(sites["pointer.scores"])[allowed], np.asarray(logits)[allowed], rtol=1e-6)
    # a large bonus on point 4's score makes it the choice wherever the rule allows it
    boost = jaxinterp.intervene(model, {"pointer.scores": lambda s: s.at[4].add(100.0)})
    boosted = eqx.filter_jit(boost)(points, 5, targets)
    assert np.all(np.asarray(jnp.argmax(boosted, -1))[allowed[:, 4]] == 4)
    mask = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0])[:, None]
    rel, irr = eqx.filter_jit(jaxinterp.cd(model, jaxinterp.Input(0, mask)))(points, 5, targets)
    np.testing.assert_allclose(np.asarray(rel + irr)[allowed], np.asarray(logits)[allowed], rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(jnp.where(allowed, rel, 0.0)))) > 1e-3


def test_pointer_network_rejects_bad_input(getkey):
    with pytest.raises(ValueError, match="unknown rule"):
        PointerNetwork("sort", 8, key=getkey())
    model = PointerNetwork("hull", 8, key=getkey())
    with pytest.raises((ValueError, TypeError)):
        eqx.filter_eval_shape(model.decode, jnp.zeros((5, 3)), 5, 4)
