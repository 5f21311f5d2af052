"""The repetition loop: every competitor once per repetition, in rotated order."""

from __future__ import annotations

from collections.abc import Sequence

from .competitors import Competitor
from .context import RunContext

__all__ = ["Samples", "run_reps"]

Samples = dict[tuple[str, str], list[float]]
"""``(phase, competitor name) -> seconds``, phase ``"save"`` or ``"restore"``."""


def _rotated(items: Sequence[Competitor], k: int) -> list[Competitor]:
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def run_reps(
    ctx: RunContext,
    competitors: Sequence[Competitor],
    *,
    reps: int,
    warmup: int = 1,
    phases: Sequence[str] = ("save", "restore"),
    label: str = "",
) -> Samples:
    """Time ``warmup + reps`` repetitions; return the samples of the last ``reps``.

    Repetition ``i`` runs the save phase (every saving competitor once, in the
    list rotated by ``i``), then the restore phase in the same order. The first
    repetition's restores are checked: each competitor's destinations are
    scrambled before and compared with the saved data after.

    Collective: call on all ranks.
    """
    for c in competitors:
        c.setup()
    samples: Samples = {}
    for c in competitors:
        if c.does_save and "save" in phases:
            samples[("save", c.name)] = []
        if c.does_restore and "restore" in phases:
            samples[("restore", c.name)] = []
    for rep in range(warmup + reps):
        order = _rotated(competitors, rep)
        record = rep >= warmup
        line = []
        if "save" in phases:
            for c in order:
                if not c.does_save:
                    continue
                c.prepare_save()
                ctx.settle()  # the removal of its previous files is not timed
                t = ctx.timed(c.save)
                line.append(f"save {c.name} {t:.3f}s")
                if record:
                    samples[("save", c.name)].append(t)
        if "restore" in phases:
            for c in order:
                if not c.does_restore:
                    continue
                check = rep == 0
                if check:
                    c.scramble()
                c.prepare_restore()
                t = ctx.timed(c.restore)
                if check:
                    c.check()
                line.append(f"restore {c.name} {t:.3f}s")
                if record:
                    samples[("restore", c.name)].append(t)
        kind = "warm-up" if not record else f"rep {rep - warmup + 1}/{reps}"
        if ctx.verbose:
            ctx.log(f"  {label} {kind}: " + ", ".join(line))
        else:
            ctx.log(f"  {label} {kind} done")
    for c in competitors:
        c.teardown()
    return samples
