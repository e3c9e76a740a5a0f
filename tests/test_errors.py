"""Bad input gets an error that names the argument and the fix."""

import jax
import jax.numpy as jnp
import pytest

import gsm_optax

PARAMS = {'w': jnp.ones((4, 5)), 'b': jnp.ones(5)}


@pytest.mark.parametrize('ratio', [0.5, 0.0, -3.0, float('nan')])
def test_ratio_below_one(ratio):
  with pytest.raises(ValueError, match=r'`ratio`.*C >= 1'):
    gsm_optax.gsm(0.1, ratio)
  with pytest.raises(ValueError, match=r'`ratio`'):
    gsm_optax.prune(PARAMS, ratio)


def test_ratio_too_large_keeps_nothing():
  tx = gsm_optax.gsm(0.1, 21.0)
  with pytest.raises(ValueError, match=r'`ratio`=21.0 keeps .* = 0 .*ratio <= 20'):
    tx.init(PARAMS)


def test_nothing_prunable():
  with pytest.raises(ValueError, match='`prunable` marks no parameter'):
    gsm_optax.gsm(0.1, 2.0).init({'b': jnp.ones(5)})
  with pytest.raises(ValueError, match='`prunable` marks no parameter'):
    gsm_optax.gsm(0.1, 2.0, prunable={'w': False, 'b': False}).init(PARAMS)


def test_prunable_tree_mismatch():
  with pytest.raises(ValueError, match='`prunable` must be a pytree'):
    gsm_optax.gsm(0.1, 2.0, prunable={'w': True}).init(PARAMS)
  with pytest.raises(ValueError, match='`prunable` must be a pytree'):
    gsm_optax.sparsity_report(PARAMS, prunable=[True, False, True])


def test_missing_params_in_update():
  tx = gsm_optax.gsm(0.1, 2.0)
  with pytest.raises(ValueError, match='needs the parameters.*params'):
    tx.update(PARAMS, tx.init(PARAMS))


def test_update_shape_mismatch():
  tx = gsm_optax.keep_top_taylor(2.0)
  with pytest.raises(ValueError, match=r'shape \(5, 4\).*shape \(4, 5\)'):
    tx.update({'w': jnp.ones((5, 4)), 'b': jnp.ones(5)}, tx.init(PARAMS), PARAMS)
  with pytest.raises(ValueError, match='structure of `params`'):
    tx.update({'w': jnp.ones((4, 5))}, tx.init(PARAMS), PARAMS)


def test_unknown_method():
  with pytest.raises(ValueError, match="`method` must be one of"):
    gsm_optax.gsm(0.1, 2.0, method='sort')


def test_top_k_with_traced_ratio_says_to_use_a_search():
  tx = gsm_optax.keep_top_taylor(2.0, method='top_k')
  traced = jax.jit(lambda r, p: gsm_optax.keep_top_taylor(r, method='top_k')
                   .update(p, tx.init(p), p))
  with pytest.raises(ValueError, match="use method='interpolate'"):
    traced(2.0, PARAMS)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_prune_refuses_non_finite_weights(bad):
  params = {'w': PARAMS['w'].at[1, 2].set(bad), 'b': PARAMS['b']}
  with pytest.raises(ValueError, match=r'`params` has 1 NaN or infinite.*'
                     r'apply_if_finite'):
    gsm_optax.prune(params, 2.0)
  # Only prunable leaves are ranked: a NaN bias is not the prune's business.
  pruned, _ = gsm_optax.prune({'w': PARAMS['w'], 'b': PARAMS['b'].at[0].set(
      bad)}, 2.0)
  assert int(jnp.sum(pruned['w'] != 0)) == 20  # ties at 1 are all kept
