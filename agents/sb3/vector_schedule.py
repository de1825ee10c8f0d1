"""SB3's ``train_freq`` / ``gradient_steps`` for ``n_envs`` envs that keep the updates per transition of one env.

The config states the replay ratio in agent steps (transitions): ``gradient_steps`` updates every ``train_freq``
transitions, ratio g / f. SB3 counts ``train_freq`` in *vector* steps (``collect_rollouts`` adds 1 per ``env.step``,
which brings ``n_envs`` transitions) and runs ``gradient_steps`` after each rollout, so passing the config's values
unchanged would divide the ratio by ``n_envs``. With d = gcd(f, n), SB3 gets

    train_freq' = f / d vector steps,   gradient_steps' = g · n / d,

so each rollout brings f'·n = f·n/d transitions and g·n/d updates: g / f updates per transition, as with one env.
Updates come in bursts of g·n/d instead of g (every f/d vector steps), the same total at every multiple of
lcm(f, n) transitions. ``target_update_interval`` needs no conversion: SB3's DQN divides it by ``n_envs`` itself.
"""

from __future__ import annotations

import math


def vector_train_schedule(train_freq: int, gradient_steps: int, n_envs: int) -> tuple[int, int]:
    """(SB3 ``train_freq`` in vector steps, SB3 ``gradient_steps``) giving ``gradient_steps / train_freq`` updates
    per transition with ``n_envs`` envs.

    >>> vector_train_schedule(4, 1, 1), vector_train_schedule(4, 1, 4), vector_train_schedule(1, 1, 4)
    ((4, 1), (1, 1), (1, 4))
    >>> vector_train_schedule(4, 1, 8)  # 8 transitions per vector step: two updates each step
    (1, 2)
    """
    for name, value in (("train_freq", train_freq), ("gradient_steps", gradient_steps), ("n_envs", n_envs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    d = math.gcd(train_freq, n_envs)
    return train_freq // d, gradient_steps * n_envs // d
