"""``freshrec snapshots``: list, inspect, pull, roll back and pin published models.

The store comes from the service settings (``FRESHREC_STORAGE__URL`` and friends, or the
``FRESHREC_CONFIG`` file); ``--url`` and ``--endpoint-url`` override them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from service.storage.bundle import BundleError
from service.storage.errors import StorageError

_EPILOG = """examples:
  freshrec snapshots list
  freshrec snapshots --url s3://freshrec/prod show latest
  freshrec snapshots pull latest --to ./model      # then load_snapshot("./model")
  freshrec snapshots rollback 41                   # the runtime adopts it as champion
  freshrec snapshots pin 41 --note "launch model"
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "snapshots",
        help="list, inspect, pull, roll back and pin published model snapshots",
        description=(
            "Manage the validated model snapshots published to object storage. The store "
            "is FRESHREC_STORAGE__URL (with FRESHREC_STORAGE__ENDPOINT_URL, __ACCESS_KEY, "
            "__SECRET_KEY for S3) unless --url is given."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="store URL: file:///folder or s3://bucket/prefix")
    parser.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:19000")
    parser.add_argument(
        "--model", help="model name in the registry (default: FRESHREC_SNAPSHOT__MODEL_NAME)"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="table of complete versions, newest first")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="a version's manifest: model, metrics, offsets, files")
    p.add_argument("version", help="version number (42 or 000042) or 'latest'")
    p.add_argument("--json", action="store_true", help="print the raw manifest JSON")
    p.set_defaults(func=_show)

    p = sub.add_parser(
        "pull",
        help="download and verify a version into a local folder",
        description=(
            "Download a version, verify every checksum, and write it into DIR with the "
            "same layout, its 'latest' pointing at it: load_snapshot(DIR) then works offline."
        ),
    )
    p.add_argument("version", help="version number or 'latest'")
    p.add_argument("--to", required=True, metavar="DIR", help="destination folder")
    p.set_defaults(func=_pull)

    p = sub.add_parser(
        "rollback",
        help="point 'latest' at another (verified) version",
        description=(
            "Verify VERSION's files, then point 'latest' at it. Serving picks it up on its "
            "next load; the running service adopts it as the champion to beat."
        ),
    )
    p.add_argument("version", help="version number to make latest")
    p.set_defaults(func=_rollback)

    p = sub.add_parser("pin", help="keep a version forever (retention skips it)")
    p.add_argument("version", help="version number")
    p.add_argument("--unpin", action="store_true", help="remove the pin instead")
    p.add_argument("--note", default="", help="why it is pinned (stored with the pin)")
    p.set_defaults(func=_pin)



def _registry(args: argparse.Namespace) -> Any:
    from service.config import load_settings
    from service.snapshots.registry import SnapshotRegistry
    from service.storage.objectstore import open_store

    settings = load_settings()
    storage = settings.storage
    updates = {k: v for k, v in (("url", args.url), ("endpoint_url", args.endpoint_url)) if v}
    if updates:
        storage = storage.model_copy(update=updates)
    name = args.model or settings.snapshot.model_name
    return SnapshotRegistry(open_store(storage), name, io_threads=storage.io_threads)


def _run(args: argparse.Namespace, fn: Any) -> int:
    from service.snapshots.registry import SnapshotNotFound

    try:
        fn(_registry(args), args)
    except (SnapshotNotFound, StorageError, BundleError, ValueError) as exc:
        print(f"freshrec snapshots {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    def go(reg: Any, args: argparse.Namespace) -> None:
        latest, pinned = reg.latest_version(), reg.pinned()
        rows, docs = [], []
        for v in reversed(reg.versions()):
            m = reg.manifest(v)
            meta, val = m.meta, m.meta.validation
            marks = (("latest", v == latest), ("pinned", v in pinned))
            flags = ",".join(f for f, on in marks if on)
            rows.append([
                v, m.created_at.strftime("%Y-%m-%d %H:%M:%S"), meta.model_type,
                val.metric or "-", _fmt(val.candidate), _fmt(val.champion), val.reason,
                _size(m.total_bytes()), flags,
            ])
            docs.append({"version": v, "latest": v == latest, "pinned": v in pinned,
                         "manifest": m.model_dump(mode="json")})
        if args.json:
            print(json.dumps(docs, indent=2))
        elif not rows:
            print(f"no published snapshots of model {reg.model_name!r} in {reg.store.url}")
        else:
            print(f"model {reg.model_name!r} in {reg.store.url}")
            print(table(["VERSION", "CREATED (UTC)", "MODEL", "METRIC", "VALUE", "CHAMPION",
                         "GATE", "SIZE", "FLAGS"], rows))

    return _run(args, go)


def _show(args: argparse.Namespace) -> int:
    def go(reg: Any, args: argparse.Namespace) -> None:
        m = reg.manifest(args.version)
        if args.json:
            print(m.to_json().decode())
            return
        meta, val = m.meta, m.meta.validation
        fields = [
            ("version", meta.version),
            ("model", f"{meta.model_name} ({meta.model_type}, task {meta.task or '-'})"),
            ("created", m.created_at.isoformat()),
            ("parent", meta.parent_version or "-"),
            ("format", f"{m.format} v{m.format_version}, meta v{meta.meta_version}"),
            ("gate", f"{val.reason}: {val.metric or '-'} {_fmt(val.candidate)} vs champion "
                     f"{_fmt(val.champion)} on {val.n_holdout} held-out (tolerance "
                     f"{val.tolerance:g})"),
            ("hyperparameters", json.dumps(meta.hyperparameters, sort_keys=True)),
            ("encoding", json.dumps(meta.encoding, sort_keys=True)),
            ("counts", json.dumps(meta.counts, sort_keys=True)),
            ("offsets", json.dumps(meta.offsets, sort_keys=True)),
        ]
        width = max(len(k) for k, _ in fields)
        for k, v in fields:
            print(f"{k.rjust(width)}  {v}")
        print()
        rows = [[name, e.dtype, "x".join(map(str, e.shape)) or "()", _size(e.size),
                 e.sha256[:16]] for name, e in sorted(m.files.items())]
        print(table(["ARRAY", "DTYPE", "SHAPE", "SIZE", "SHA256"], rows))

    return _run(args, go)


def _pull(args: argparse.Namespace) -> int:
    def go(reg: Any, args: argparse.Namespace) -> None:
        import hashlib

        from service.snapshots.registry import SnapshotRegistry
        from service.storage.bundle import MANIFEST_NAME, BundleIntegrityError
        from service.storage.local import LocalFolderStore
        from service.storage.objectstore import join_key

        version, _ = reg.resolve(args.version)
        manifest = reg.manifest(args.version)  # for 'latest', checked against the pointer
        dest = LocalFolderStore(args.to)
        src_prefix = reg.version_prefix(version)
        for entry in manifest.files.values():
            key = join_key(src_prefix, entry.path)
            data = reg.store.get(key)
            # Each file is fetched once, checked, and written byte for byte, so the local
            # copy keeps the same manifest and checksums.
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BundleIntegrityError(
                    f"file {key!r} in {reg.store.url} does not match its manifest; not pulled"
                )
            dest.put(key, data)
        dest.put(join_key(src_prefix, MANIFEST_NAME), manifest.to_json())
        local = SnapshotRegistry(dest, reg.model_name)
        local.set_latest(version, verify=True)
        print(f"pulled {reg.model_name} version {version} "
              f"({_size(manifest.total_bytes())}, verified) into {dest.root}")

    return _run(args, go)


def _rollback(args: argparse.Namespace) -> int:
    def go(reg: Any, args: argparse.Namespace) -> None:
        before = reg.latest_version()
        v = reg.rollback(args.version)
        print(f"latest of {reg.model_name!r}: {before or '-'} -> {v}")

    return _run(args, go)


def _pin(args: argparse.Namespace) -> int:
    def go(reg: Any, args: argparse.Namespace) -> None:
        from service.snapshots.registry import normalize_version

        v = normalize_version(args.version)
        if args.unpin:
            reg.unpin(v)
            print(f"unpinned {reg.model_name} version {v}")
        else:
            reg.pin(v, note=args.note)
            print(f"pinned {reg.model_name} version {v}")

    return _run(args, go)
