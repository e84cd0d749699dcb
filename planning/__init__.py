"""Will it fit? The device memory a train step needs per worker, before anything loads.

``shapes`` reads a model's parameters from its config.json (no weights), ``trainable``
follows LLaMA-Factory's rules for what a step trains, ``memory`` turns a step's
arguments into rows of bytes, ``sequence`` finds the longest sample the step will
see, ``suggest`` lists the cheapest changes that make a step fit, ``plan`` puts them
together for ``lfkit plan``, ``lfkit run`` (the preflight) and ``--dry-run``, and
``measure`` records what a real step held, in its run.json.
"""

from lfkit.hookspecs import hookimpl

from . import measure


@hookimpl
def lfkit_train_callbacks(args):
    return measure.callbacks()
