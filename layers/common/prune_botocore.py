"""Cuts the botocore installed into the layer down to the services the function calls.

botocore ships the models of every AWS service and an ``endpoints.json`` naming them all,
which every new botocore session parses whole before its first client: cold-start time spent
on services never called (docs/performance.md has the figures). This keeps the named
services' model folders and, in ``endpoints.json``, their entries only; each partition's own
data (regions, region pattern, DNS suffix, defaults) is kept whole, so an endpoint resolves
for the kept services exactly as with the full botocore (tests/test_prune_botocore.py
compares every region).

Standard library only: it runs wherever the layer is built (``layers/common/Makefile``, the
benchmark's artifacts). Running it twice changes nothing more.

Usage: python prune_botocore.py BOTOCORE_DIR SERVICE [SERVICE ...]
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = "usage: python prune_botocore.py BOTOCORE_DIR SERVICE [SERVICE ...]"


def endpoint_prefix(service_dir: Path) -> str:
    """The key ``endpoints.json`` lists a service under (its model's ``endpointPrefix``)."""
    latest = sorted(p for p in service_dir.iterdir() if p.is_dir())[-1]
    plain, packed = latest / "service-2.json", latest / "service-2.json.gz"
    raw = plain.read_bytes() if plain.exists() else gzip.decompress(packed.read_bytes())
    prefix: str = json.loads(raw)["metadata"]["endpointPrefix"]
    return prefix


def prune(botocore_dir: Path, services: Sequence[str]) -> list[str]:
    """Keeps ``services`` in ``botocore_dir``'s data; returns the service folders removed."""
    data = botocore_dir / "data"
    missing = [name for name in services if not (data / name).is_dir()]
    if missing:
        raise ValueError(f"no model for {', '.join(missing)} in {data}")
    prefixes = {endpoint_prefix(data / name) for name in services}

    removed = sorted(p.name for p in data.iterdir() if p.is_dir() and p.name not in services)
    for name in removed:
        shutil.rmtree(data / name)

    endpoints_file = data / "endpoints.json"
    endpoints = json.loads(endpoints_file.read_text("utf-8"))
    for partition in endpoints["partitions"]:
        partition["services"] = {
            name: spec for name, spec in partition["services"].items() if name in prefixes
        }
    # Written anew rather than edited in place: the file may be a hard link into a cache.
    endpoints_file.unlink()
    endpoints_file.write_text(json.dumps(endpoints, separators=(",", ":")), "utf-8")
    return removed


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    botocore_dir, services = Path(argv[0]), list(argv[1:])
    try:
        removed = prune(botocore_dir, services)
    except (OSError, ValueError, KeyError) as error:
        print(f"prune_botocore: {error}", file=sys.stderr)
        return 1
    print(f"botocore: kept {', '.join(services)}; removed {len(removed)} other services")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
