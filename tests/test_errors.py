"""Bad input gets an error that names the argument and the fix."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
  with pytest.warns(UserWarning, match='tie at the threshold'):
    pruned, _ = gsm_optax.prune({'w': PARAMS['w'], 'b': PARAMS['b'].at[0].set(
        bad)}, 2.0)
  assert int(jnp.sum(pruned['w'] != 0)) == 20  # ties at 1 are all kept


@pytest.mark.parametrize('ratio', ['60', None, [60.0], jnp.ones(2), True])
def test_ratio_that_is_not_a_real_number(ratio):
  with pytest.raises(ValueError, match=r'`ratio` must be a real number'):
    gsm_optax.gsm(0.1, ratio)
  with pytest.raises(ValueError, match=r'`ratio` must be a real number'):
    gsm_optax.prune(PARAMS, ratio)


def test_ratio_schedule_points_to_inject_hyperparams():
  schedule = optax.linear_schedule(1.0, 4.0, 10)
  with pytest.raises(ValueError, match=r'`ratio`.*callable.*inject_hyperparams'):
    gsm_optax.gsm(0.1, schedule)
  # The way that works: the schedule is evaluated every step.
  tx = optax.inject_hyperparams(gsm_optax.gsm)(learning_rate=0.1,
                                               ratio=schedule)
  _, state = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
  assert int(gsm_optax.find_mask_state(state).num_active) == 20


def test_per_element_prunable_mask_is_refused():
  prunable = {'w': np.ones((4, 5), bool), 'b': False}
  with pytest.raises(ValueError, match=r"`prunable` gives an array of shape "
                     r"\(4, 5\) for \['w'\].*one bool per leaf"):
    gsm_optax.gsm(0.1, 2.0, prunable=prunable).init(PARAMS)


def test_integer_params_are_refused():
  params = {'w': jnp.ones((4, 5)), 'n': jnp.array([3, 4])}
  grads = jax.grad(lambda p: jnp.sum(p['w'] ** 2), allow_int=True)(params)
  assert grads['n'].dtype == jax.dtypes.float0
  for tx in (gsm_optax.gsm(0.1, 2.0),
             gsm_optax.gradual_magnitude_pruning(2.0, 0, 10)):
    with pytest.raises(ValueError, match=r"floating-point parameters only; "
                       r"\['n'\] has dtype int32.*wrt=nnx.Param"):
      tx.init(params)
  tx = gsm_optax.gsm(0.1, 2.0)
  state = tx.init({'w': params['w'], 'n': jnp.zeros(2)})
  with pytest.raises(ValueError, match=r"\['n'\] has dtype int32"):
    tx.update(grads, state, params)


def test_nan_ratio_injected_after_init_raises_when_the_step_runs():
  tx = optax.inject_hyperparams(gsm_optax.gsm)(learning_rate=0.1, ratio=2.0)
  state = tx.init(PARAMS)
  grads = {'w': jnp.arange(20.0).reshape(4, 5), 'b': jnp.ones(5)}
  step = jax.jit(tx.update)
  _, ok = step(grads, state, PARAMS)
  assert int(gsm_optax.find_mask_state(ok).num_active) == 10
  for bad in (float('nan'), 0.5, 21.0):
    state.hyperparams['ratio'] = jnp.asarray(bad)
    with pytest.raises(Exception, match=r'`ratio` reached .* inside a jitted '
                       r'step.*1 <= C <= 20'):
      jax.block_until_ready(step(grads, state, PARAMS))
    # Outside jit the injected value is concrete and checked at once.
    with pytest.raises(ValueError, match=r'`ratio`'):
      tx.update(grads, state, PARAMS)


def test_prune_warns_when_ties_defeat_the_ratio():
  with pytest.warns(UserWarning, match=r'prune kept 20 non-zero weights, not '
                    r'Q = 5: 15 more tie at the threshold \|w\| = 1.*'
                    r'ratio is 1.00x'):
    pruned, _ = gsm_optax.prune(PARAMS, 4.0)
  assert gsm_optax.sparsity_report(pruned).compression == 1.0
  # Ties among zeros cost nothing: no warning when at most Q are non-zero.
  sparse = {'w': jnp.zeros((4, 5)).at[0, :2].set(1.0), 'b': PARAMS['b']}
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    gsm_optax.prune(sparse, 4.0)


def test_unknown_prune_count():
  with pytest.raises(ValueError, match=r"`count` must be one of"):
    gsm_optax.prune(PARAMS, 2.0, count='ceil')


@pytest.mark.parametrize('name,value,error', [
    ('momentum', 1.5, ValueError), ('momentum', -0.1, ValueError),
    ('momentum', 1.0, ValueError), ('weight_decay', -1e-4, ValueError),
    ('learning_rate', float('inf'), ValueError),
    ('learning_rate', 'fast', TypeError), ('momentum', True, TypeError),
    ('passive_decay', 1.0, ValueError)])
def test_hyperparameters_out_of_range_are_refused(name, value, error):
  kwargs = dict(learning_rate=0.1, ratio=2.0, momentum=0.9, weight_decay=1e-4)
  kwargs[name] = value
  with pytest.raises(error, match=f'`{name}` must be a number'):
    gsm_optax.gsm(**kwargs)


def test_hyperparameters_from_inject_hyperparams_are_not_checked_early():
  tx = optax.inject_hyperparams(gsm_optax.gsm)(learning_rate=0.1, ratio=2.0,
                                               momentum=0.9)
  params = {'w': jnp.ones((2, 2))}
  state = tx.init(params)
  tx.update(params, state, params)


def test_a_leaf_that_is_not_an_array_is_named_with_the_fix():
  eqx = pytest.importorskip('equinox')
  model = eqx.nn.MLP(4, 2, 8, depth=1, key=jax.random.key(0))
  for call in (lambda: gsm_optax.prune(model, 2.0),
               lambda: gsm_optax.sparsity_report(model),
               lambda: gsm_optax.gsm(0.1, 2.0).init(model)):
    with pytest.raises(ValueError, match=r'`params` holds a .* at '
                       r'\.activation, not an array.*eqx\.partition'):
      call()
  params, _ = eqx.partition(model, eqx.is_array)
  pruned, _ = gsm_optax.prune(params, 2.0)
  assert gsm_optax.sparsity_report(pruned).prunable_size == 4 * 8 + 8 * 2


def test_num_to_keep_names_its_first_argument_when_given_params():
  params = {'w': jnp.ones((4, 4))}
  with pytest.raises(TypeError, match='`num_prunable` is N, the number of '
                     'prunable weights'):
    gsm_optax.num_to_keep(params, 2.0)
  with pytest.raises(TypeError, match='`num_prunable`'):
    gsm_optax.num_to_keep(16.0, 2.0)
  assert gsm_optax.num_to_keep(np.int64(16), 2.0) == 8


def test_prune_refuses_integer_weights_as_gsm_does():
  params = {'w': jnp.arange(16).reshape(4, 4),
            'v': jnp.arange(1., 17.).reshape(4, 4)}
  with pytest.raises(ValueError, match=r"prune ranks floating-point weights "
                     r"only; \['w'\] has dtype int32.*`prunable`"):
    gsm_optax.prune(params, 2.0)
  with pytest.raises(ValueError, match=r"\['w'\] has dtype int32"):
    gsm_optax.gsm(0.1, 2.0).init(params)
  pruned, _ = gsm_optax.prune(params, 2.0, prunable={'w': False, 'v': True})
  np.testing.assert_array_equal(pruned['w'], params['w'])


def test_prune_says_when_a_layer_keeps_no_weight():
  params = {'big': jnp.full((8, 8), 10.0) + jnp.arange(64.).reshape(8, 8),
            'small': jnp.full((4, 4), 1e-3)}
  with pytest.warns(UserWarning, match=r"kept no weight of \['small'\]: the "
                    'model no longer uses'):
    pruned, _ = gsm_optax.prune(params, 4.0)
  assert not np.asarray(pruned['small']).any()
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # a prune that leaves every layer some
    gsm_optax.prune({'a': jnp.arange(1., 17.).reshape(4, 4),
                     'b': jnp.arange(1., 17.).reshape(4, 4) + 0.5}, 2.0)
