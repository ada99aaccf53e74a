"""Many pairs at once on dask.distributed: ``clemalign batch`` and :func:`register_many`.

A manifest (CSV) lists one pair per row: ``em`` and ``lm`` (paths, relative to the
manifest's folder or absolute), an optional ``name`` (the pair's output folder; default
the row number) and any ``clemalign register`` option as a column named after its flag
(``roi``, ``lm_channel``, ``em_voxel_size`` as ``"Z Y X"``, ``no_mirror`` as
``true``/``false``, ...; an empty cell leaves the default).  Each pair runs the very
``register`` command, so its output folder is exactly a ``register`` folder.

The pairs run on a dask.distributed cluster: a ``LocalCluster`` by default, or any running
scheduler (``--scheduler ADDRESS``; with dask-jobqueue that is an HPC cluster).  A failing
pair never stops the others; a pair whose worker is lost is retried once and then
reported; a pair whose folder already holds a complete result is skipped unless
``overwrite``.  ``summary.csv`` and ``summary.html`` in the output folder list every pair:
status, verdict, score, landmark error (with a ``landmarks`` column), time, message.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, reading_text

__all__ = ["PairJob", "read_manifest", "register_many", "BatchConfig", "SUMMARY_FIELDS"]

SUMMARY_FIELDS = ("name", "status", "verdict", "score", "tre_mean_um", "seconds", "message")
_PATH_COLUMNS = ("em", "lm", "landmarks")


@dataclass(frozen=True)
class PairJob:
    """One row of the manifest: the pair's name and its ``register`` arguments."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class BatchConfig:
    """Where and how the pairs run.

    Attributes
    ----------
    scheduler : str, optional
        Address of a running dask scheduler; None: a ``LocalCluster`` on this machine.
    workers : int
        LocalCluster worker processes.
    threads_per_worker : int
        Threads of each worker, also passed to each registration (``--workers``).
    processes : bool
        LocalCluster workers as processes (default) or threads of this process.
    """

    scheduler: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    processes: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads_per_worker < 1:
            raise InputError("--workers and --threads-per-worker must be at least 1")


def read_manifest(path: str | os.PathLike) -> list[PairJob]:
    """The pairs of a manifest CSV (see the module's description).

    Raises
    ------
    InputError
        Missing ``em``/``lm`` columns or cells, duplicate names, an empty manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such manifest file")
    with reading_text(path, "manifest CSV"), open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values())]
    if not rows:
        raise InputError(f"{path}: the manifest lists no pair")
    missing = {"em", "lm"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: the manifest needs the columns em and lm (missing "
                         f"{', '.join(sorted(missing))})")
    jobs, names = [], set()
    for k, row in enumerate(rows, start=1):
        name = (row.get("name") or "").strip() or f"pair{k:03d}"
        if name in names or "/" in name or name in (".", ".."):
            raise InputError(f"{path}, row {k}: name {name!r} is repeated or not a folder name")
        names.add(name)
        pair, argv = {}, []
        for column, value in row.items():
            value = (value or "").strip()
            if column in ("em", "lm") and not value:
                raise InputError(f"{path}, row {k}: the {column} cell is empty")
            if column in ("name", None) or not value:
                continue
            if column in _PATH_COLUMNS:  # relative to the manifest's folder
                value = str(path.parent / value)
            if column in ("em", "lm"):
                pair[column] = value
                continue
            flag = "--" + column.strip().replace("_", "-")
            if value.lower() in ("true", "yes"):
                argv.append(flag)
            elif value.lower() not in ("false", "no"):
                argv += [flag, *value.split()]
        jobs.append(PairJob(name, (pair["em"], pair["lm"], *argv)))
    return jobs


def _complete(folder: Path) -> bool:
    """A finished ``register`` folder (its files appear together: run.json is one)."""
    return (folder / "transform.json").is_file() and (folder / "run.json").is_file()


# pairs run in threads of one process share the console: it is quiet while any runs, and
# its own setting comes back when the last one ends (saving and restoring it per pair
# left it quiet when two pairs overlapped)
_QUIET_LOCK = threading.Lock()
_quiet_state = {"depth": 0, "saved": False}


def _quiet_enter(console) -> None:
    with _QUIET_LOCK:
        if _quiet_state["depth"] == 0:
            _quiet_state["saved"] = console.quiet
        _quiet_state["depth"] += 1
        console.quiet = True


def _quiet_leave(console) -> None:
    with _QUIET_LOCK:
        _quiet_state["depth"] -= 1
        if _quiet_state["depth"] == 0:
            console.quiet = _quiet_state["saved"]


def _run_pair(job: PairJob, outdir: str, overwrite: bool, threads: int) -> dict:
    """One pair on a worker: the ``register`` command itself; a summary row."""
    import click

    from .cli.app import _as_flags, out
    from .cli.registration import register_command

    folder = Path(outdir) / job.name
    row = {"name": job.name, "status": "", "verdict": "", "score": "", "tre_mean_um": "",
           "seconds": "", "message": ""}
    if _complete(folder) and not overwrite:
        return {**row, "status": "skipped", **_from_record(folder),
                "message": "already finished (use --overwrite to redo)"}
    argv = ["register", *job.argv[:2], "-o", str(folder), "--workers", str(threads),
            *job.argv[2:]] + (["--overwrite"] if overwrite else [])
    t0 = time.perf_counter()
    _quiet_enter(out)  # the summary says what each pair's lines would
    try:
        with click.Context(register_command) as ctx:
            register_command.parse_args(ctx, argv[1:])
            ctx.invoke(register_command, **ctx.params)
        status, message = "done", ""
    except click.exceptions.Exit as exc:  # --strict and a failed verdict
        status, message = "done", f"exit status {exc.exit_code}"
    except click.UsageError as exc:
        status, message = "bad input", exc.format_message()
    except InputError as exc:
        status, message = "bad input", _as_flags(str(exc))
    except Exception as exc:  # reported in the summary; the other pairs go on
        status, message = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        _quiet_leave(out)
    row.update(status=status, message=message, seconds=f"{time.perf_counter() - t0:.1f}")
    if status == "done":
        row.update(_from_record(folder))
    return row


def _from_record(folder: Path) -> dict:
    record = json.loads((folder / "transform.json").read_text(encoding="utf-8"))
    conf = record.get("confidence", {})
    tre = record.get("evaluation", {}).get("summary", {}).get("mean_um")
    return {"verdict": conf.get("verdict", ""), "score": f"{conf.get('score', float('nan')):.2f}",
            "tre_mean_um": "" if tre is None else f"{tre:.3f}"}


def _client(config: BatchConfig):
    from dask.distributed import Client, LocalCluster

    if config.scheduler:
        return Client(config.scheduler), None
    cluster = LocalCluster(n_workers=config.workers, threads_per_worker=1,
                           processes=config.processes,
                           dashboard_address=":0")  # any free port: 8787 may be taken
    return Client(cluster), cluster


def register_many(jobs: list[PairJob], outdir: str | os.PathLike, *,
                  config: BatchConfig = BatchConfig(), overwrite: bool = False,
                  progress: Callable[[dict, int, int], None] | None = None) -> list[dict]:
    """Register every pair on a dask.distributed cluster; write the summary files.

    Parameters
    ----------
    jobs : list of PairJob
        From :func:`read_manifest`.
    outdir : path
        One folder per pair (its ``name``) and ``summary.csv`` / ``summary.html``.
    config : BatchConfig
    overwrite : bool
        Redo pairs already finished and replace their files.
    progress : callable, optional
        Called with each finished row, the number done and the total.

    Returns
    -------
    list of dict
        One summary row per pair (manifest order).
    """
    from dask.distributed import as_completed

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    client, cluster = _client(config)
    rows: dict[str, dict] = {}
    try:
        futures = {client.submit(_run_pair, job, str(outdir), overwrite,
                                 config.threads_per_worker, key=f"clemalign-{job.name}",
                                 pure=False, retries=1): job for job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # the worker was lost twice (retried once)
                row = {"name": job.name, "status": "lost", "verdict": "", "score": "",
                       "tre_mean_um": "", "seconds": "",
                       "message": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            rows[job.name] = row
            if progress is not None:
                progress(row, done, len(jobs))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [rows[job.name] for job in jobs]
    _write_summary(outdir, ordered)
    return ordered


def _write_summary(outdir: Path, rows: list[dict]) -> None:
    from .io import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(outdir / "summary.csv", buf.getvalue(), overwrite=True)
    colour = {"ok": "#2e7d32", "uncertain": "#ef6c00", "failed": "#c62828"}
    body = "".join(
        "<tr>" + "".join(
            f"<td style='color:{colour.get(r['verdict'], '#222')}'>{html.escape(str(r[k]))}</td>"
            if k == "verdict" else
            (f"<td><a href='{html.escape(r['name'])}/report.html'>{html.escape(r['name'])}</a>"
             "</td>" if k == "name" and r["status"] in ("done", "skipped")
             else f"<td>{html.escape(str(r[k]))}</td>") for k in SUMMARY_FIELDS) + "</tr>"
        for r in rows)
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>clemalign batch"
            "</title><style>body{font-family:system-ui,sans-serif;margin:2em}td,th{border:1px "
            "solid #ccc;padding:.2em .6em}table{border-collapse:collapse}</style></head><body>"
            f"<h1>clemalign batch: {len(rows)} pairs</h1><table><tr>"
            + "".join(f"<th>{k}</th>" for k in SUMMARY_FIELDS) + f"</tr>{body}</table>"
            "</body></html>")
    atomic_write_text(outdir / "summary.html", page, overwrite=True)
