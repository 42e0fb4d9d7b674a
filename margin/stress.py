"""The stress-loss report: the loss of a portfolio under extreme-but-plausible scenarios, beside
(not inside) the daily margin, which is not priced at the worst day in history.

Scenarios (:class:`StressScenario`): the worst historical moves of each underlying in the full
data (found by the pipeline, each cited by date and source), hypothetical joint moves from the
parameters (``stress_hypothetical``), and the engine's measure under the bundle's stressed-high and
stressed-low correlation matrices. Every scenario is revalued through the same kernel: the
underlyings move by the scenario's log returns over the book's MPOR (contracts age), implied vols
follow the engine's dynamics plus, for ``iv="up"``, the bundle's vol-of-vol up shock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from margin.calculator import MarginContext, book_mpor, compute_margin
from margin.market_state import MarketState
from margin.params import MarginParams
from margin.portfolio import Portfolio
from margin.scenarios import FactorSet, build_scenarios, iv_shocks
from models.forecast import RiskForecastBundle

__all__ = ["StressScenario", "stress_report"]


@dataclass(frozen=True)
class StressScenario:
    """One stress scenario: log returns per underlying (absent: unchanged), the implied-vol state
    ("up": the vol-of-vol up shock on top of the dynamics; "flat": the dynamics only), where it
    comes from (a date and source set, or "parameters")."""

    name: str
    moves: Mapping[str, float]
    iv: str = "up"
    source: str = ""
    date: str = ""


@dataclass(frozen=True)
class StressReport:
    """The report: one row per scenario (P&L in the margin currency, negative = loss, and the loss
    as a multiple of the day's IM), the correlation-stress measures, the IM it is compared with."""

    portfolio: str
    margin_currency: str
    im: float
    rows: tuple[dict[str, Any], ...]
    correlation: Mapping[str, float] = field(default_factory=dict)
    failures: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"portfolio": self.portfolio, "margin_currency": self.margin_currency,
                "im": self.im, "rows": list(self.rows), "correlation": dict(self.correlation),
                "failures": [f.to_dict() for f in self.failures]}


def stress_report(portfolio: Portfolio, market_state: MarketState, bundle: RiskForecastBundle,
                  scenarios: Sequence[StressScenario], params: MarginParams | None = None
                  ) -> StressReport:
    """Revalue ``portfolio`` under every scenario (plus ``params.stress_hypothetical``) and report
    the losses beside the day's IM and the measures under the stressed correlations."""
    p = params or MarginParams()
    base = compute_margin(portfolio, market_state, bundle, p)
    ok = list(base.positions)  # priced and revalued by the engine (the rest are its failures)
    priced = {} if base.context is None else base.context.priced
    ccy = portfolio.margin_currency
    unds = sorted({q.instrument.underlying for q in ok} | ({ccy} if ccy != "USD" else set()))
    corr = {k: float(v) for k, v in base.measures.get("by_matrix", {}).items()}
    if not ok:
        return StressReport(portfolio.name, ccy, base.im, (), corr, base.failures)
    hyp = [StressScenario(name, {u: float(np.log1p(m)) for u, m in moves.items()}, "up",
                          "parameters: stress_hypothetical")
           for name, moves in p.stress_hypothetical]
    todo = [s for s in [*scenarios, *hyp] if any(u in unds for u in s.moves)]
    sc0 = build_scenarios(unds, bundle, p.model_copy(update={"scenario_sources": ("mc",),
                                                             "mc_n_scenarios": 10}),
                          book_mpor(ok, p), as_of=market_state.as_of)
    n, m = max(len(todo), 1), len(unds)
    x, shock = np.zeros((n, m)), np.zeros((n, m))
    for k, s in enumerate(todo):
        for j, u in enumerate(unds):
            x[k, j] = float(s.moves.get(u, 0.0))
            if s.iv == "up":
                shock[k, j] = iv_shocks(sc0.vol_of_vol[j], sc0.mpor_days, p)[1]
    z = np.zeros_like(x)
    fs = FactorSet("stress", x, shock, z, z, tuple(s.name for s in todo) or ("none",))
    sc = dataclasses.replace(sc0, sets={"stress": fs}, pools={"forecast": ("stress",)})
    ctx = MarginContext(market_state, bundle, p, ccy, sc, ("stress",), {"stress": (0, n)})
    for k_, v_ in priced.items():
        ctx.priced.setdefault(k_, v_)
    ctx.add(sorted({q.instrument.name: q.instrument for q in ok}.values(), key=lambda i: i.name))
    good = [q for q in ok if q.instrument.name in ctx.index]
    rows = []
    for k, s in enumerate(todo):
        per = {q.id: float(q.quantity * ctx.unit[ctx.index[q.instrument.name], k]) for q in good}
        pnl = float(sum(per.values()))
        worst = sorted(per.items(), key=lambda kv: kv[1])[:3]
        rows.append({"scenario": s.name, "date": s.date, "source": s.source, "iv": s.iv,
                     "moves": {u: float(np.expm1(v)) for u, v in s.moves.items() if u in unds},
                     "pnl": pnl, "loss_over_im": (-pnl / base.im) if base.im > 0 else None,
                     "worst_positions": [{"id": i, "pnl": v} for i, v in worst]})
    rows.sort(key=lambda r: r["pnl"])
    return StressReport(portfolio.name, ccy, base.im, tuple(rows), corr,
                        tuple(base.failures))
