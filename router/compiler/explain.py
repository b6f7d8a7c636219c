"""`router explain`: the decision trail of one request through a Plan.

This walks the routes one by one to say why each did or did not match (the server never
does: it uses the compiled matcher). The verdict is taken from `Plan.resolve` itself, so
the trail cannot disagree with what the server would do."""

from __future__ import annotations

from typing import Any

import jmespath
import yaml

from router.compiler.dump import Collector, render_step
from router.compiler.glob import glob_test, is_glob
from router.compiler.matcher import evaluate, truthy
from router.compiler.plan import Instance, Plan, Provider, Route, Target
from router.compiler.probe import Probe, mapped_body, resolve, upstream_model
from router.protocols import ir

STAGES = ("request", "upstream", "response", "headers")


def explain(plan: Plan, probe: Probe) -> str:
    lines = _request(probe)
    try:
        resolution = resolve(plan, probe)
    except ir.Error as error:
        lines += _overrides(plan, probe, error)
        lines += ["", f"=> rejected: HTTP {error.status} {error.kind}: {error.message}"]
        return "\n".join(lines) + "\n"

    lines += _overrides(plan, probe, None)
    if resolution.via in ("route", "default"):
        lines += _routes(plan, probe, resolution.route if resolution.via == "route" else None)
        if resolution.via == "default":
            lines.append(f"4. default: {plan.default}")
    route = resolution.route
    lines += ["", f"=> route {route.name!r} (via {resolution.via})"]
    lines += _chain(plan, probe, route)
    return "\n".join(lines) + "\n"


def _request(probe: Probe) -> list[str]:
    headers = ", ".join(f"{k}: {v}" for k, v in sorted(probe.headers.items())) or "(none)"
    lines = ["request:", f"  protocol: {probe.protocol}", f"  model:    {probe.model}"]
    if probe.path is not None:
        lines.append(f"  path:     {probe.path}")
    lines.append(f"  headers:  {headers}")
    lines.append("")
    return lines


def _overrides(plan: Plan, probe: Probe, error: ir.Error | None) -> list[str]:
    lines = []
    if not plan.path_prefix:
        lines.append("1. path prefix: disabled")
    elif probe.path_provider is None:
        lines.append("1. path prefix: none")
    else:
        known = probe.path_provider in plan.providers
        verdict = "selects it" if known else "unknown provider"
        lines.append(f"1. path prefix: {probe.path_provider!r}: {verdict}")
        return lines
    if plan.header is None:
        lines.append("2. override header: disabled")
    else:
        value = probe.headers.get(plan.header)
        if not value:
            lines.append(f"2. header {plan.header}: not present")
        else:
            verdict = "selects it" if value.strip() in plan.providers else "unknown provider"
            lines.append(f"2. header {plan.header}: {value!r}: {verdict}")
    return lines


def _routes(plan: Plan, probe: Probe, hit: Route | None) -> list[str]:
    lines = ["3. routes (first match wins):"]
    if not plan.routes:
        lines.append("   (no routes)")
    for index, route in enumerate(plan.routes):
        matched, why = _why(route, probe)
        where = f" ({route.source})" if route.source else ""
        if route is hit:
            lines.append(f"   - {route.name}{where}: MATCH: {why}")
            rest = len(plan.routes) - index - 1
            if rest:
                lines.append(f"   ({rest} later route{'s' if rest != 1 else ''} not considered)")
            break
        if matched and not route.active:
            lines.append(
                f"   - {route.name}{where}: skipped: matches ({why}) but is inactive: "
                "no provider in its chain has a usable instance"
            )
        elif matched:  # pragma: no cover - resolve() would have returned it
            lines.append(f"   - {route.name}{where}: matches ({why})")
        else:
            lines.append(f"   - {route.name}{where}: no: {why}")
    else:
        lines.append("   no route matched")
    return lines


def _why(route: Route, probe: Probe) -> tuple[bool, str]:
    spec = route.match
    if spec is None:
        return True, "always"
    reasons = []
    if spec.models:
        hit = next((p for p in spec.models if glob_test(p)(probe.model)), None)
        if hit is None:
            shown = ", ".join(spec.models)
            return False, f"model {probe.model!r} matches none of [{shown}]"
        kind = "glob" if is_glob(hit) else "name"
        reasons.append(f"model {probe.model!r} matches {kind} {hit!r}")
    if spec.protocols:
        if probe.protocol not in spec.protocols:
            return False, f"protocol {probe.protocol!r} is not {' or '.join(spec.protocols)}"
        reasons.append(f"protocol is {probe.protocol}")
    if spec.when is not None:
        context = {
            "model": probe.model,
            "protocol": probe.protocol,
            "headers": dict(probe.headers),
            "body": probe.body,
        }
        result = evaluate(jmespath.compile(spec.when), context)
        shown = _flow(result)
        if not truthy(result):
            return False, f"when {spec.when!r} is {shown}"
        reasons.append(f"when {spec.when!r} is {shown}")
    return True, "; ".join(reasons) if reasons else "no conditions (matches everything)"


def _chain(plan: Plan, probe: Probe, route: Route) -> list[str]:
    lines = ["failover chain:"]
    active = {id(t) for t in route.targets}
    declared = route.declared or route.targets
    for number, target in enumerate(declared, 1):
        provider = plan.providers[target.provider]
        lines += _target(number, target, provider, probe, id(target) in active)
    if route.retry_on or route.max_attempts or route.strict:
        extras = []
        if route.retry_on:
            extras.append(f"retry_on {sorted(map(str, route.retry_on))}")
        if route.max_attempts:
            extras.append(f"max_attempts {route.max_attempts}")
        if route.strict:
            extras.append("strict")
        lines.append("  " + ", ".join(extras))
    return lines


def _target(
    number: int, target: Target, provider: Provider, probe: Probe, active: bool
) -> list[str]:
    if provider.protocol == "ir":
        translation = "takes the intermediate form"
    elif provider.protocol == probe.protocol:
        translation = f"speaks {provider.protocol}, passed through"
    else:
        translation = f"speaks {provider.protocol}, translated from {probe.protocol}"
    head = f"  {number}. {target.provider} (type {provider.type}, {translation})"
    if not active:
        head += " -- SKIPPED: no usable instance"
    lines = [head]
    body = mapped_body(target.pipeline, probe)
    model, why = upstream_model(target, probe, body)
    lines.append(f"     upstream model: {model} ({why})")
    lines.append(f"     instances: {_instances(provider)}")
    if target.pipeline is None:
        lines.append("     pipeline: none")
        return lines
    lines.append(f"     pipeline: {target.pipeline.name}")
    collector = Collector()
    for stage in STAGES:
        steps = getattr(target.pipeline, stage)
        if not steps:
            continue
        lines.append(f"       {stage}:")
        for step in steps:
            shown = render_step(step, collector, headers=stage == "headers")
            lines.append(f"         - {_flow(shown)}")
    return lines


def _said(instance: Instance) -> str:
    return "enabled" if instance.enabled_in_file else "disabled"


def _instances(provider: Provider) -> str:
    if not provider.instances:
        return "built in" if provider.type == "echo" else "none"
    shown = []
    for instance in provider.instances:
        notes = []
        if instance.override is not None:
            state = "enabled" if instance.override else "disabled"
            notes.append(f"{state} by a runtime override (the file says {_said(instance)})")
        elif not instance.enabled:
            notes.append("disabled")
        if instance.unconfigured:
            missing = [u.removeprefix("file:") for u in instance.unconfigured]
            notes.append(f"unconfigured: {', '.join(missing)}")
        if instance.models or instance.exclude_models:
            serves = "serves " + (", ".join(instance.models) if instance.models else "all")
            if instance.exclude_models:
                serves += " except " + ", ".join(instance.exclude_models)
            notes.append(serves)
        shown.append(instance.id + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(shown)


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, sort_keys=False)
    text = text.strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()
