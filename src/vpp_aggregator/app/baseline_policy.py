"""Which baseline settles each aggregation, and each method's numbers, from configuration
(`VPP_BASELINE_DEFAULT`, `VPP_BASELINE_METHODS`, `VPP_BASELINE_PARAMETERS`), checked at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from zoneinfo import ZoneInfo

from vpp_aggregator.domain.baselines import (
    DEFAULT_RULES,
    Adjustment,
    BaselineMethod,
    BaselineRule,
)


@dataclass(frozen=True, slots=True)
class BaselinePolicy:
    """Which method settles each aggregation, and each method's parameters."""

    default: BaselineMethod = BaselineMethod.METERED
    by_aggregation: Mapping[str, BaselineMethod] = field(default_factory=dict)
    rules: Mapping[BaselineMethod, BaselineRule] = field(default_factory=lambda: DEFAULT_RULES)

    def rule_for(self, aggregation_id: str) -> BaselineRule:
        return self.rules[self.by_aggregation.get(aggregation_id, self.default)]

    @classmethod
    def parse(
        cls, default: str, methods: str, parameters: Mapping[str, Mapping[str, object]]
    ) -> BaselinePolicy:
        """From configuration: `VPP_BASELINE_DEFAULT` (a method), `VPP_BASELINE_METHODS`
        (`"NODE_A=caiso_10in10,NODE_B=pjm_cbl"`) and `VPP_BASELINE_PARAMETERS` (JSON: per method,
        the `BaselineRule` fields to change, e.g. `{"caiso_10in10": {"adjustment_cap": 0.4}}`).
        A ValueError names what cannot be read."""
        names = ", ".join(m.value for m in BaselineMethod)

        def method(text: str) -> BaselineMethod:
            try:
                return BaselineMethod(text.strip())
            except ValueError:
                raise ValueError(f"unknown baseline method {text!r}; one of {names}") from None

        by: dict[str, BaselineMethod] = {}
        for part in filter(None, (p.strip() for p in methods.split(","))):
            node, sep, name = part.partition("=")
            if not sep or not node.strip():
                raise ValueError(f"{part!r}: expected GRID_NODE=method, e.g. NODE_A=pjm_cbl")
            by[node.strip()] = method(name)
        rules = dict(DEFAULT_RULES)
        for name, changes in parameters.items():
            m = method(name)
            known = {f.name for f in fields(BaselineRule)} - {"method"}
            kwargs: dict[str, Any] = {}
            for key, value in changes.items():
                if key not in known:
                    raise ValueError(f"{name}: {key!r} is not a baseline parameter")
                kwargs[key] = _parameter(name, key, getattr(rules[m], key), value)
            rules[m] = replace(rules[m], **kwargs)
            _check(rules[m])
        return cls(method(default), by, rules)


def _parameter(method: str, key: str, default: object, value: object) -> object:
    """A configured parameter, of the type its default has (None where None is allowed)."""
    if key == "adjustment":
        try:
            return Adjustment(str(value))
        except ValueError:
            raise ValueError(f"{method}.adjustment: ratio or additive, not {value!r}") from None
    optional = key in ("low_usage_share", "adjustment_cap")
    if value is None and optional:
        return None
    kind = bool if isinstance(default, bool) else type(default) if default is not None else float
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ValueError(f"{method}.{key}: expected {kind.__name__}, not {value!r}")
    return value


def _check(rule: BaselineRule) -> None:
    name = rule.method.value
    try:
        ZoneInfo(rule.timezone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{name}.timezone: no time zone {rule.timezone!r}") from None
    if rule.lookback_days < 1:
        raise ValueError(f"{name}.lookback_days must be at least 1")
    for days, keep, least in (
        (rule.weekday_days, rule.weekday_keep, rule.weekday_min_days),
        (rule.weekend_days, rule.weekend_keep, rule.weekend_min_days),
    ):
        if not 1 <= keep <= days or not 1 <= least <= days:
            raise ValueError(f"{name}: days kept and needed must be 1 to the days looked at")
    if not rule.adjustment_from_h > rule.adjustment_to_h >= 0:
        raise ValueError(f"{name}: adjustment_from_h must be more than adjustment_to_h (≥ 0)")
