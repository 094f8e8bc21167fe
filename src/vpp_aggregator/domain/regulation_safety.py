"""The independent check of a regulation command: that what a resource is told can never break
a rule, whatever the signal does while the command holds (docs/safety.md).

A command says: follow `base_kw + participation_kw × signal` (signal in −1…+1) at no more than
`ramp_kw_per_min`, for `valid_s`. Its worst cases are the signal pinned at +1 (full discharge)
or −1 (full charge) for the whole validity, so each is checked: power within the resource's
limits both ways, the ramp limit, the SoC at the end of a worst case within floor and ceiling
(with the one-way efficiency), and for a vehicle, that it can still reach its departure SoC by
charging at full power from the command's end, which must come before it leaves (a vehicle that
could not reach it even charging at full power from now must reach what that would). This shares no
code with `domain/regulation.allocate`; it takes the resource's facts as
`domain/dispatch/safety.ResourceFacts` states them.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpp_aggregator.domain.dispatch.safety import ResourceFacts, SafetyViolation

TOL_KW = 1e-6
TOL_PCT = 1e-6


def overshoot_kwh(gap_kw: float, ramp_kw_per_min: float, minutes: float) -> float:
    """Energy beyond a constant new power that a resource `gap_kw` past it still moves while it
    ramps there at its limit, over `minutes` at most."""
    if gap_kw <= 0 or minutes <= 0:
        return 0.0
    ramp = max(ramp_kw_per_min, 1e-9)
    t = min(minutes, gap_kw / ramp)
    return (gap_kw * t - ramp * t * t / 2.0) / 60.0


@dataclass(frozen=True, slots=True)
class RegulationCommand:
    resource_id: str
    base_kw: float
    participation_kw: float
    ramp_kw_per_min: float
    valid_s: float


def check_regulation(
    cmd: RegulationCommand,
    facts: ResourceFacts,
    *,
    soc_pct: float,
    departure_in_s: float | None,
    max_ramp_kw_per_min: float,
    round_trip_efficiency: float,
    power_kw: float = 0.0,
) -> list[SafetyViolation]:
    """Every rule the command could break, each named as the dispatch checker names them.
    `power_kw` is what the resource does now: it reaches a worst case at its ramp limit, so one
    now beyond it (discharging more than +1 asks, or charging more than −1 asks) overshoots on
    the way by (ΔP)² / 2R."""
    out: list[SafetyViolation] = []

    def broken(rule: str, detail: str) -> None:
        out.append(SafetyViolation(cmd.resource_id, rule, 0, detail))

    if cmd.participation_kw < 0:
        broken("participation", f"{cmd.participation_kw:g} kW per unit of signal is negative")
    if cmd.participation_kw == 0 and cmd.base_kw == 0:
        return out  # released: nothing asked
    if not facts.available:
        broken("unavailable", "the resource is not available to regulate")
    top = cmd.base_kw + cmd.participation_kw
    bottom = cmd.base_kw - cmd.participation_kw
    if top > facts.max_discharge_kw + TOL_KW:
        broken("discharge_power", f"{top:g} kW at signal +1 > {facts.max_discharge_kw:g} kW")
    if -bottom > facts.max_charge_kw + TOL_KW:
        broken("charge_power", f"{-bottom:g} kW charging at signal −1 > {facts.max_charge_kw:g} kW")
    if cmd.ramp_kw_per_min > max_ramp_kw_per_min + TOL_KW:
        broken("ramp", f"{cmd.ramp_kw_per_min:g} kW/min > {max_ramp_kw_per_min:g} kW/min")
    eta = round_trip_efficiency**0.5
    hours = cmd.valid_s / 3600.0
    cap = facts.capacity_kwh
    ramp = cmd.ramp_kw_per_min
    minutes = cmd.valid_s / 60.0
    over_top = overshoot_kwh(power_kw - top, ramp, minutes)  # kWh more given on the way
    over_bottom = overshoot_kwh(bottom - power_kw, ramp, minutes)  # kWh more taken
    # worst cases over the validity: pinned at +1, pinned at −1
    given = top * hours + over_top  # net kWh out at the grid
    taken = -bottom * hours + over_bottom  # net kWh in
    lowest = soc_pct - (max(given, 0.0) / eta - max(-given, 0.0) * eta) / cap * 100.0
    highest = soc_pct + (max(taken, 0.0) * eta - max(-taken, 0.0) / eta) / cap * 100.0
    rule = "bess_min_soc" if facts.is_bess else "driver_min_soc"
    # a resource found outside its limits may be brought back, never taken further out; what it
    # does now it undoes only at its ramp limit, and that much no command can prevent (as a
    # dispatch's forced ramp points, docs/safety.md rule 4)
    forced_out = overshoot_kwh(power_kw, ramp, 1e9) / eta / cap * 100.0  # draining to 0
    forced_in = overshoot_kwh(-power_kw, ramp, 1e9) * eta / cap * 100.0  # charging to 0
    floor = min(facts.floor_pct, soc_pct - forced_out)
    ceiling = max(facts.ceiling_pct, soc_pct + forced_in)
    if lowest < floor - TOL_PCT:
        broken(rule, f"SoC {lowest:.3f} % after {hours * 60:g} min at +1 < {floor:g} %")
    if highest > ceiling + TOL_PCT:
        broken(
            "max_soc",
            f"SoC {highest:.3f} % after {hours * 60:g} min at −1 > {facts.ceiling_pct:g} %",
        )
    if departure_in_s is not None:
        if cmd.valid_s > departure_in_s + 1e-6:
            broken("after_departure", f"valid {cmd.valid_s:g} s, it leaves in {departure_in_s:g} s")
        left_h = max(departure_in_s - cmd.valid_s, 0.0) / 3600.0
        # from the worst case it ramps to full charge at its limit, then charges to departure
        late = overshoot_kwh(top + facts.max_charge_kw, ramp, left_h * 60.0)
        reachable = lowest + (facts.max_charge_kw * left_h - late) * eta / cap * 100.0
        # what it needs, or, when even charging at full power from now (reached at the ramp
        # limit) falls short, that much; commands are in whole watts, so a watt is forgiven
        to_full = overshoot_kwh(power_kw + facts.max_charge_kw, ramp, departure_in_s / 60.0)
        best_kwh = facts.max_charge_kw * departure_in_s / 3600.0 - to_full
        best = soc_pct + best_kwh * eta / cap * 100.0
        needed = min(facts.departure_soc_pct, best)
        watt = 0.001 * departure_in_s / 3600.0 * eta / cap * 100.0
        if reachable < needed - watt - TOL_PCT:
            broken(
                "departure_soc",
                f"from {lowest:.3f} % at full charge it reaches {reachable:.3f} % by departure, "
                f"not {needed:g} %",
            )
    return out
