"""The contract every SDE solver keeps: one step from (t, y) over h, given the Brownian increment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

__all__ = ["AbstractSolver"]


@dataclasses.dataclass(frozen=True)
class AbstractSolver:
    """A one-step SDE method.

    Class attributes say what the method is for, and :func:`solverlab.sde.solve` checks them before
    anything is traced:

    * ``noise_types``: the noise types it handles (``"diagonal"``, ``"additive"``, ``"general"``);
    * ``calculi``: the calculi it converges to (for additive noise Ito and Stratonovich agree, so
      every solver accepts both there);
    * ``levy_area``: what it needs from the Brownian path (``None`` or ``"space-time"``);
    * ``strong_order``: ``{noise type: order}`` under the usual smoothness assumptions;
    * ``error_estimate``: whether :meth:`step` returns an embedded error estimate (adaptive steps);
    * ``drift_evals``: drift evaluations per step.
    """

    name: ClassVar[str] = "solver"
    noise_types: ClassVar[tuple[str, ...]] = ()
    calculi: ClassVar[tuple[str, ...]] = ()
    levy_area: ClassVar[str | None] = None
    strong_order: ClassVar[dict] = {}
    error_estimate: ClassVar[bool] = False
    #: Drift evaluations per step (the cost counted in ``Solution.stats["nfe"]``).
    drift_evals: ClassVar[int] = 1

    def step(self, sde, t, y, h, inc, args):
        """Return ``(y_next, y_error)``; ``y_error`` is ``None`` without an embedded estimate.

        Args:
            sde: the :class:`~solverlab.sde.SDE`.
            t, h: the step's start and length (scalars).
            y: the state at ``t``.
            inc: :class:`~solverlab.brownian.BrownianIncrement` over ``[t, t + h]``.
            args: passed to ``drift`` and ``diffusion``.
        """
        raise NotImplementedError

    def check(self, sde) -> None:
        """``ValueError`` when the method cannot solve ``sde``."""
        if sde.noise not in self.noise_types:
            raise ValueError(
                f"{self.name} handles noise {', '.join(self.noise_types)}, got noise={sde.noise!r}"
            )
        if sde.noise != "additive" and sde.calculus not in self.calculi:
            raise ValueError(
                f"{self.name} converges to the {' or '.join(self.calculi)} solution, got "
                f"calculus={sde.calculus!r}; pick a solver for {sde.calculus} SDEs"
            )
