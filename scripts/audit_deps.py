"""Check every pinned dependency against known-vulnerability records (OSV format), offline.

pip-audit asks PyPI's JSON API or OSV over the internet; this project's machines reach only the
package index, so the records for our pinned packages are kept in `security/advisories.json`, taken
from the PyPA advisory database (the source PyPI's own vulnerability data comes from).

    python scripts/audit_deps.py requirements.lock requirements-dev.lock      # check (make audit)
    python scripts/audit_deps.py --refresh-from ~/advisory-database requirements*.lock

The check fails when a pin falls in an affected range, and also when a pinned package is missing
from the snapshot: a new dependency cannot slip in unaudited.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

SNAPSHOT = Path(__file__).resolve().parent.parent / "security" / "advisories.json"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(paths: list[Path]) -> dict[str, str]:
    """name -> version from `pip-compile`/`uv pip compile` lock files."""
    pins: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            m = _PIN.match(line.strip())
            if m:
                pins[normalize(m.group(1))] = m.group(2)
    return pins


def _affected_by_range(version: Version, events: list[dict[str, str]]) -> bool:
    """OSV ECOSYSTEM range: events in order, each `introduced` opens, `fixed`/`last_affected` closes.
    Older records start with a close and no `introduced`: affected from the first release."""
    inside = bool(events) and "introduced" not in events[0]
    for event in events:
        try:
            if "introduced" in event:
                start = event["introduced"]
                if start == "0" or version >= Version(start):
                    inside = True
            elif "fixed" in event:
                inside = inside and version < Version(event["fixed"])
            elif "last_affected" in event:
                inside = inside and version <= Version(event["last_affected"])
        except InvalidVersion:
            continue
    return inside


def affects(advisory: dict[str, Any], package: str, pinned: str) -> bool:
    if advisory.get("withdrawn") or normalize(advisory["package"]) != package:
        return False
    try:
        version = Version(pinned)
    except InvalidVersion:
        return False
    if pinned in advisory.get("versions", []):
        return True
    return any(
        r.get("type", "ECOSYSTEM") == "ECOSYSTEM" and _affected_by_range(version, r["events"])
        for r in advisory.get("ranges", [])
    )


@dataclass
class Finding:
    package: str
    pinned: str
    advisory_id: str
    fixed: list[str]


def _superseded(advisories: list[dict[str, Any]]) -> set[str]:
    """Import drafts (PYSEC-0000-…) once the same CVE has its own numbered (or withdrawn) record."""
    final = {
        (normalize(a["package"]), alias)
        for a in advisories
        if not a["id"].startswith("PYSEC-0000-")
        for alias in a.get("aliases", [])
    }
    return {
        a["id"]
        for a in advisories
        if a["id"].startswith("PYSEC-0000-")
        and any((normalize(a["package"]), alias) in final for alias in a.get("aliases", []))
    }


def audit(pins: dict[str, str], snapshot: dict[str, Any]) -> tuple[list[Finding], list[str]]:
    """Findings, and pinned packages the snapshot never looked at."""
    checked = {normalize(p) for p in snapshot["packages_checked"]}
    skip = _superseded(snapshot["advisories"])
    findings = []
    for advisory in snapshot["advisories"]:
        if advisory["id"] in skip:
            continue
        package = normalize(advisory["package"])
        if package in pins and affects(advisory, package, pins[package]):
            fixed = [
                e["fixed"] for r in advisory.get("ranges", []) for e in r["events"] if "fixed" in e
            ]
            findings.append(Finding(package, pins[package], advisory["id"], fixed))
    return findings, sorted(set(pins) - checked)


def refresh(database: Path, pins: dict[str, str], old: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the snapshot from a checkout of the PyPA advisory database (vulns/<pkg>/*.yaml)."""
    import yaml  # type: ignore[import-untyped]

    folders = {normalize(p.name): p for p in (database / "vulns").iterdir() if p.is_dir()}
    advisories = []
    for package in sorted(pins):
        folder = folders.get(package)
        for path in sorted(folder.glob("*.yaml")) if folder else []:
            record = yaml.safe_load(path.read_text())
            for affected in record.get("affected", []):
                if normalize(affected["package"]["name"]) != package:
                    continue
                entry: dict[str, Any] = {
                    "id": record["id"],
                    "aliases": record.get("aliases", []),
                    "modified": str(record.get("modified", "")),
                    "package": package,
                    "ranges": [
                        {"type": r["type"], "events": r["events"]}
                        for r in affected.get("ranges", [])
                        if r["type"] == "ECOSYSTEM"
                    ],
                    "source_path": str(path.relative_to(database)),
                }
                if affected.get("versions") and not entry["ranges"]:
                    entry["versions"] = affected["versions"]
                if record.get("withdrawn"):
                    entry["withdrawn"] = str(record["withdrawn"])
                advisories.append(entry)
    return {
        **{k: v for k, v in old.items() if k not in ("advisories", "packages_checked")},
        "refreshed": datetime.now(UTC).date().isoformat(),
        "newest_modified": max((a["modified"] for a in advisories), default=""),
        "packages_checked": sorted(pins),
        "advisories": advisories,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locks", nargs="+", type=Path)
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--refresh-from", type=Path, metavar="ADVISORY_DATABASE")
    args = parser.parse_args(argv)
    pins = read_pins(args.locks)
    snapshot = json.loads(args.snapshot.read_text()) if args.snapshot.exists() else {}
    if args.refresh_from:
        snapshot = refresh(args.refresh_from, pins, snapshot)
        args.snapshot.write_text(json.dumps(snapshot, indent=1) + "\n")
        print(f"snapshot rewritten: {len(snapshot['advisories'])} records for {len(pins)} packages")
    findings, unaudited = audit(pins, snapshot)
    print(
        f"{len(pins)} pinned packages checked against {len(snapshot['advisories'])} advisory records "
        f"(source: {snapshot.get('source', '?')}, records modified up to "
        f"{snapshot.get('newest_modified', '?')})"
    )
    for f in findings:
        print(
            f"VULNERABLE {f.package}=={f.pinned}: {f.advisory_id} (fixed in {', '.join(f.fixed) or '?'})"
        )
    for name in unaudited:
        print(
            f"NOT AUDITED {name}=={pins[name]}: not in the snapshot; refresh it (see --refresh-from)"
        )
    if not findings and not unaudited:
        print("no known-vulnerable pins")
    return 1 if findings or unaudited else 0


if __name__ == "__main__":
    sys.exit(main())
